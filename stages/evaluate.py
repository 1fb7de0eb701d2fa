"""Stage `evaluate@<latent_dim>-<seed>`: reconstruction, KL, ELBO, the importance-weighted log-likelihood
estimate, per-unit KL and active units of one model, on train and test; each example's ELBO and
importance-weighted estimate beside them (metrics/<d>-<seed>.examples.npz, for select's bootstrap);
the training loss's fall over its last epochs (convergence).

Computation only: no MLflow and no matplotlib here, whose imports would cost more than a small
model's evaluation. The report stage logs these numbers and the model's pictures to its MLflow run.
"""

from vaebic.cli import run_cli, stage_parser


def main() -> None:
    ap = stage_parser(__doc__, per_model=True)
    ap.add_argument("--model", required=True, help="model folder, e.g. models/8-0")
    ap.add_argument("--out", required=True, help="metrics file to write, e.g. metrics/8-0.json")
    ap.add_argument("--examples", required=True, help="per-example estimates to write, e.g. metrics/8-0.examples.npz")
    args = ap.parse_args()
    from vaebic.files import write_json_atomic, write_npz_atomic
    from vaebic.stages.evaluate import evaluate

    record, examples = evaluate(args.params, args.data, args.model, args.latent_dim, args.seed)
    write_npz_atomic(args.examples, examples)
    write_json_atomic(args.out, record)


if __name__ == "__main__":
    run_cli(main)
