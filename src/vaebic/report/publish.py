"""What the report stage sends to MLflow: the sweep's parent run gets the figures, table and
choice; each model's run its evaluation, BIC, AIC and pictures; the Model Registry the selected
model, with the alias `champion` moved to it.

The metrics and tags are plain dicts built by functions of their own, testable without MLflow;
every MLflow call goes through vaebic.tracking.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from vaebic.report.results import FIGURES, Results, draw_model_pictures

log = logging.getLogger("vaebic.report")  # the report stage's name in its log lines


def publish(r: Results, out: Path, model) -> None:
    """Log the report built in out to the sweep's parent run, register the selected model (the
    loaded model), and log each model's evaluation and pictures to its own run."""
    from vaebic import tracking
    from vaebic.selection import criteria

    tags = tracking.provenance(os.environ.get("DVC_STAGE", "report"), r.params_path, r.meta["fingerprint"])
    with tracking.sweep_run(r.params["mlflow"]["experiment"], tracking.sweep_key(r.params, r.meta["fingerprint"]), tags):
        # tags, not params: the parent outlives one report (a new latent dimension joins the same sweep),
        # and MLflow params may never change
        tracking.set_tags(sweep_tags(r))
        tracking.log_metrics(choice_metrics(r.choice))
        for _, row in r.summary.iterrows():  # curves in the MLflow UI: the step is the latent dimension
            tracking.log_metrics(curve_metrics(row), step=int(row["latent_dim"]))
        tracking.log_table(r.table, "bic_table.json")
        for name in (*FIGURES.values(), "report.md"):
            tracking.log_artifact(out / name)
        for name in ("bic.csv", criteria.PICKS_FILE, criteria.SELECTION_FILE, criteria.NOTES_FILE):
            tracking.log_artifact(r.reports / name)
    register_selected(r, model)
    to_model_runs(r, tags["dvc.stage"])


def sweep_tags(r: Results) -> dict:
    choice = r.choice
    return {
        "best_latent_dim": choice["best_latent_dim"],
        "dataset": r.meta["dataset"],
        "select.criterion": choice["criterion"],
        "select.count_params": choice["count_params"],
        "select.log_likelihood": choice["log_likelihood"],
        "sweep.latent_dims": sorted(set(r.table.latent_dim.tolist())),
        "sweep.seeds": sorted(set(r.table.seed.tolist())),
    }


def choice_metrics(choice: dict) -> dict:
    return {
        "best_latent_dim": choice["best_latent_dim"],
        "best_seed": choice["best_seed"],
        f"best_{choice['criterion']}": choice["best_value"],
        "bic_overfit": int(choice["bic_overfit"]),
        "models_at_cap": choice["models_at_cap"],
        **{f"pick_stable_since_epoch_{c}": e for c, e in choice["pick_stable_since_epoch"].items() if e is not None},
    }


def _known(name: str, value) -> dict:
    """{name: value}, or nothing when value is NaN (not computed: no bootstrap)."""
    return {name: value} if value == value else {}


def curve_metrics(row) -> dict:
    """One latent dimension's means over seeds (a row of criteria.summarise)."""
    return {
        "bic_mean": row["bic"],
        "aic_mean": row["aic"],
        "iwae_test_mean": row["iwae_test"],
        "elbo_test_mean": row["elbo_test"],
        "active_units_mean": row["active_units"],
        **(_known("selection_frequency", row["selection_frequency"]) if "selection_frequency" in row else {}),
    }


def model_metrics(rec: dict, row) -> dict:
    """One model's evaluation (its metrics record) and criteria (its row of bic.csv)."""
    return {
        **{f"{m}_{split}": rec[split][f"{m}_nats"] for split in ("train", "test") for m in ("elbo", "recon", "kl", "iwae")},
        **{f"iwae_se_{split}": rec[split]["iwae_std_err_nats"] for split in ("train", "test")},
        "active_units": rec["train"]["active_units"],
        "bic": row.bic,
        "aic": row.aic,
        "log_likelihood": row.log_likelihood,
        "generalization_gap": row.generalization_gap,
        "best_epoch": row.best_epoch,
        "epochs_run": row.epochs_run,
        **({"gaussian_sigma": rec["gaussian_sigma"]} if rec.get("gaussian_sigma") is not None else {}),
        **_known("selection_frequency", row.selection_frequency),
    }


def register_selected(r: Results, model) -> None:
    """The selected model into the Model Registry, alias `champion` moved to it; nothing when the
    champion already is this model (a report re-run with the same pick), or when
    mlflow.registered_model is null."""
    (d, seed), name = r.best, r.params["mlflow"]["registered_model"]
    if name is None:
        log.info("mlflow.registered_model is null: the selected model (d=%d, seed %d) was not registered", d, seed)
        return
    from vaebic import tracking

    champion_run = tracking.load_run_id(r.models / f"{d}-{seed}")
    if not tracking.run_exists(champion_run):
        log.warning("the selected model's MLflow run is not in this store; it was not registered")
    elif (version := tracking.champion_version(name, champion_run)) is not None:
        # the same trained model (its run) won again: another version of it would be a duplicate
        log.info("%s version %s (alias champion) is this model already: d=%d, seed %d", name, version, d, seed)
    else:
        version = tracking.register_champion(model, name, champion_run)
        log.info("registered %s version %s (alias champion): d=%d, seed %d", name, version, d, seed)


def to_model_runs(r: Results, stage: str) -> None:
    """Each model's evaluation, criteria and pictures into its own run, so the runs table sorts by them."""
    from vaebic import tracking
    from vaebic.model.vae import load_model

    records = {(rec["latent_dim"], rec["seed"]): rec for rec in r.records}
    for row in r.table.itertuples(index=False):
        folder = r.models / f"{row.latent_dim}-{row.seed}"
        run_id = tracking.load_run_id(folder)
        if not tracking.run_exists(run_id):
            log.warning("no MLflow run for latent_dim=%d seed=%d in this store; its results are in reports/ only", row.latent_dim, row.seed)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            paths = (Path(tmp) / "reconstructions.png", Path(tmp) / "samples.png")
            title = f"d={row.latent_dim}, seed {row.seed}"
            draw_model_pictures(load_model(folder), r.test_x[:10], 32, r.meta["image_shape"], title, paths, dpi=80)
            metrics = model_metrics(records[(row.latent_dim, row.seed)], row)
            tracking.log_to(run_id, metrics, artifacts=paths, tags={"dvc.stage.last": stage, "stop_reason": row.stop_reason})
