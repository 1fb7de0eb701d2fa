"""Stage `report`: the BIC curve, ELBO/reconstruction/KL curves, active units and per-unit KL,
reconstructions and prior samples of the selected model, and reports/report.md tying them to the
table. It publishes to MLflow: the report to the sweep's parent run, each model's evaluation,
criteria and pictures to the model's run, and the winner to the Model Registry."""

from vaebic.cli import run_cli, stage_parser


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--metrics", default="metrics")
    ap.add_argument("--models", default="models")
    args = ap.parse_args()
    from vaebic.stages.report import report

    report(args.params, args.reports, args.metrics, args.data, args.models)


if __name__ == "__main__":
    run_cli(main)
