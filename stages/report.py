"""Stage `report`: the BIC curve, ELBO/reconstruction/KL curves, active units and per-unit KL,
reconstructions and prior samples of the selected model, and reports/report.md tying them to the
table. It publishes to MLflow: the report to the sweep's parent run, each model's evaluation,
criteria and pictures to the model's run, and the winner to the Model Registry."""

import json
import logging
import os
import tempfile
from pathlib import Path

from vaebic.cli import run_cli, stage_parser

log = logging.getLogger("vaebic.report")

FIGURES = {
    "bic_curve": "bic_curve.png",
    "metric_curves": "metric_curves.png",
    "latent_usage": "latent_usage.png",
    "reconstructions": "reconstructions.png",
    "samples": "samples.png",
}


def log_report_to_mlflow(p: dict, args, meta: dict, table, summary, choice: dict, model, out: Path, records: list[dict], test_x) -> None:
    """The sweep's parent run gets the figures, table and choice; each child its evaluation, BIC,
    AIC and pictures; the Model Registry the winner, with the alias `champion` moved to it."""
    from vaebic import tracking

    reports, (d, seed) = Path(args.reports), (choice["best_latent_dim"], choice["best_seed"])
    tags = tracking.provenance(os.environ.get("DVC_STAGE", "report"), args.params, meta["fingerprint"])
    with tracking.sweep_run(p["mlflow"]["experiment"], tracking.sweep_key(p, meta["fingerprint"]), tags):
        # tags, not params: the parent outlives one report (a new latent dimension joins the same sweep),
        # and MLflow params may never change
        tracking.set_tags(
            {
                "best_latent_dim": d,
                "dataset": meta["dataset"],
                "select.criterion": choice["criterion"],
                "select.count_params": choice["count_params"],
                "select.log_likelihood": choice["log_likelihood"],
                "sweep.latent_dims": sorted(set(table.latent_dim.tolist())),
                "sweep.seeds": sorted(set(table.seed.tolist())),
            }
        )
        tracking.log_metrics({"best_latent_dim": d, "best_seed": seed, f"best_{choice['criterion']}": choice["best_value"]})
        for _, row in summary.iterrows():  # curves in the MLflow UI: the step is the latent dimension
            tracking.log_metrics(
                {
                    "bic_mean": row["bic"],
                    "aic_mean": row["aic"],
                    "iwae_test_mean": row["iwae_test"],
                    "elbo_test_mean": row["elbo_test"],
                    "active_units_mean": row["active_units"],
                    **(
                        {"selection_frequency": row["selection_frequency"]}
                        if row.get("selection_frequency") == row.get("selection_frequency")
                        else {}
                    ),
                },
                step=int(row["latent_dim"]),
            )
        tracking.log_table(table, "bic_table.json")
        for name in (*FIGURES.values(), "report.md"):
            tracking.log_artifact(out / name)
        for name in ("bic.csv", "selection.json"):
            tracking.log_artifact(reports / name)
    # the winner into the Model Registry, alias `champion` moved to it
    champion_run = tracking.load_run_id(Path(args.models) / f"{d}-{seed}")
    if tracking.run_exists(champion_run):
        version = tracking.register_champion(model, p["mlflow"]["registered_model"], champion_run)
        log.info("registered %s version %s (alias champion): d=%d, seed %d", p["mlflow"]["registered_model"], version, d, seed)
    else:
        log.warning("the selected model's MLflow run is not in this store; it was not registered")
    # each model's evaluation, criteria and pictures into its own run, so the runs table sorts by them
    records = {(r["latent_dim"], r["seed"]): r for r in records}
    for row in table.itertuples(index=False):
        folder = Path(args.models) / f"{row.latent_dim}-{row.seed}"
        run_id = tracking.load_run_id(folder)
        if not tracking.run_exists(run_id):
            log.warning("no MLflow run for latent_dim=%d seed=%d in this store; its results are in reports/ only", row.latent_dim, row.seed)
            continue
        rec = records[(row.latent_dim, row.seed)]
        metrics = {
            **{f"{m}_{split}": rec[split][f"{m}_nats"] for split in ("train", "test") for m in ("elbo", "recon", "kl", "iwae")},
            **{f"iwae_se_{split}": rec[split]["iwae_std_err_nats"] for split in ("train", "test")},
            "active_units": rec["train"]["active_units"],
            "bic": row.bic,
            "aic": row.aic,
            "log_likelihood": row.log_likelihood,
            **({"gaussian_sigma": rec["gaussian_sigma"]} if rec.get("gaussian_sigma") is not None else {}),
            **({"selection_frequency": row.selection_frequency} if row.selection_frequency == row.selection_frequency else {}),
        }
        with tempfile.TemporaryDirectory() as tmp:
            pictures = model_pictures(folder, test_x[:10], meta["image_shape"], f"d={row.latent_dim}, seed {row.seed}", Path(tmp))
            tracking.log_to(run_id, metrics, artifacts=pictures, tags={"dvc.stage.last": tags["dvc.stage"]})


def model_pictures(folder: Path, x_np, image_shape: list[int], title: str, out: Path) -> list[Path]:
    """Reconstructions of a few test images and samples from the prior of one model, as PNG files in out."""
    import torch

    from vaebic import plots
    from vaebic.evaluation import reconstructions_and_samples
    from vaebic.model import load_model

    x = torch.from_numpy(x_np).float()
    recon, samples = reconstructions_and_samples(load_model(folder), x, 32)
    paths = [out / "reconstructions.png", out / "samples.png"]
    plots.model_pictures(
        x.numpy(), recon.numpy(), samples.numpy(), image_shape, title=title, reconstructions_path=paths[0], samples_path=paths[1], dpi=80
    )
    return paths


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--metrics", default="metrics")
    ap.add_argument("--models", default="models")
    args = ap.parse_args()
    import pandas as pd

    from vaebic import data, params, plots, selection, tracking
    from vaebic.files import staged_files
    from vaebic.report import describe_setup, precision_text, write_markdown

    p = params.load(args.params)
    rp = p["report"]
    reports = Path(args.reports)
    tracking.setup(p["mlflow"]["experiment"])  # an unreachable tracking server fails here, in seconds
    table = pd.read_csv(reports / "bic.csv")
    choice = json.loads((reports / "selection.json").read_text())
    _, test_x, meta = data.load_prepared(args.data)
    setup = describe_setup(
        meta, choice["count_params"], choice["log_likelihood"], int(table.k_samples.iloc[0]), p["model"]["gaussian_sigma"]
    )
    summary = selection.summarise(table)
    pairs = list(zip(table.latent_dim.tolist(), table.seed.tolist()))
    records = selection.read_records(args.metrics, pairs)
    kl_per_unit = {(r["latent_dim"], r["seed"]): r["train"]["kl_per_unit_nats"] for r in records}
    true_dim = meta.get("synthetic", {}).get("true_dim")

    # Built aside and moved into reports/ only when all of it (MLflow logging included) succeeded.
    with staged_files(reports) as out:
        plots.bic_curve(table, summary, choice, subtitle=setup["subtitle"], path=out / FIGURES["bic_curve"], dpi=rp["dpi"])
        plots.metric_curves(summary, subtitle=setup["subtitle"], path=out / FIGURES["metric_curves"], dpi=rp["dpi"])
        plots.latent_usage(
            summary, kl_per_unit, true_dim=true_dim, subtitle=setup["subtitle"], path=out / FIGURES["latent_usage"], dpi=rp["dpi"]
        )

        import torch

        from vaebic.evaluation import reconstructions_and_samples
        from vaebic.model import load_model

        d, seed = choice["best_latent_dim"], choice["best_seed"]
        model = load_model(Path(args.models) / f"{d}-{seed}")
        x = torch.from_numpy(test_x[: rp["n_reconstructions"]]).float()
        recon, samples = reconstructions_and_samples(model, x, rp["n_samples"])
        plots.model_pictures(
            x.numpy(),
            recon.numpy(),
            samples.numpy(),
            meta["image_shape"],
            title=f"selected model d={d}, seed {seed}",
            reconstructions_path=out / FIGURES["reconstructions"],
            samples_path=out / FIGURES["samples"],
            dpi=rp["dpi"],
        )
        configs = [json.loads((Path(args.models) / f"{d_}-{s_}" / "config.json").read_text()).get("train", {}) for d_, s_ in pairs]
        write_markdown(
            out / "report.md",
            table=table,
            choice=choice,
            setup=setup,
            figures=FIGURES,
            kl_per_unit=kl_per_unit,
            active_threshold=p["evaluate"]["active_threshold"],
            precision=precision_text(records, configs),
            summary=summary,
        )

        log_report_to_mlflow(p, args, meta, table, summary, choice, model, out, records, test_x)
    log.info("report written to %s (selected latent_dim=%d)", reports / "report.md", d)


if __name__ == "__main__":
    run_cli(main)
