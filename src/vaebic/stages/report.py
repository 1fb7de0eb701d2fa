"""The report stage's wiring (stages/report.py): read the select stage's table and choice, draw
the figures, write reports/report.md, and publish all of it to MLflow (vaebic.publish).

The files are built aside and moved into reports/ only when all of it, the MLflow logging
included, succeeded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("vaebic.report")  # the stage's name in its log lines

FIGURES = {
    "bic_curve": "bic_curve.png",
    "pick_vs_epoch": "pick_vs_epoch.png",
    "metric_curves": "metric_curves.png",
    "latent_usage": "latent_usage.png",
    "reconstructions": "reconstructions.png",
    "samples": "samples.png",
}


@dataclass
class Results:
    """What the report reads: params, the select stage's table and choice, every model's
    evaluation record, the prepared data's meta and test split, and the set-up's description."""

    params: dict
    params_path: str
    reports: Path
    models: Path
    meta: dict
    table: object  # pandas.DataFrame: reports/bic.csv
    choice: dict  # criteria.read_choice
    setup: dict  # report.describe_setup
    summary: object  # pandas.DataFrame: criteria.summarise(table)
    picks: object  # pandas.DataFrame: reports/pick_vs_epoch.csv
    records: list[dict]
    test_x: object  # numpy array

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.table.latent_dim.tolist(), self.table.seed.tolist()))

    @property
    def best(self) -> tuple[int, int]:
        return self.choice["best_latent_dim"], self.choice["best_seed"]


def read_results(p: dict, params_path: str, reports: str, metrics: str, data_dir: str, models: str) -> Results:
    import pandas as pd

    from vaebic.data import prepared
    from vaebic.report.markdown import describe_setup
    from vaebic.selection import criteria

    reports = Path(reports)
    table = pd.read_csv(reports / "bic.csv")
    choice = criteria.read_choice(reports)
    prepared = prepared.load_prepared(data_dir)
    test_x, meta = prepared.test, prepared.meta
    setup = describe_setup(
        meta, choice["count_params"], choice["log_likelihood"], int(table.k_samples.iloc[0]), p["model"]["gaussian_sigma"]
    )
    summary = criteria.summarise(table)
    pairs = list(zip(table.latent_dim.tolist(), table.seed.tolist()))
    records = criteria.read_records(metrics, pairs)
    picks = pd.read_csv(reports / criteria.PICKS_FILE)
    return Results(p, params_path, reports, Path(models), meta, table, choice, setup, summary, picks, records, test_x)


def report(params_path: str, reports: str, metrics: str, data_dir: str, models: str) -> None:
    """Write the figures and report.md into reports/ and publish them, each model's evaluation and
    pictures, and the champion to MLflow."""
    from vaebic import params, tracking
    from vaebic.files import staged_files
    from vaebic.report import publish

    p = params.load(params_path)
    tracking.setup(p["mlflow"]["experiment"])  # an unreachable tracking server fails here, in seconds
    r = read_results(p, params_path, reports, metrics, data_dir, models)
    with staged_files(r.reports) as out:
        draw_figures(r, out)
        model = selected_model_pictures(r, out)
        write_report(r, out)
        publish.publish(r, out, model)
    log.info("report written to %s (selected latent_dim=%d)", r.reports / "report.md", r.best[0])


def kl_per_unit(r: Results) -> dict:
    return {(rec["latent_dim"], rec["seed"]): rec["train"]["kl_per_unit_nats"] for rec in r.records}


def draw_figures(r: Results, out: Path) -> None:
    """The BIC curve, the picks by epoch, the metric curves and latent usage over the sweep."""
    from vaebic.report import plots

    dpi, subtitle = r.params["report"]["dpi"], r.setup["subtitle"]
    plots.bic_curve(r.table, r.summary, r.choice, subtitle=subtitle, path=out / FIGURES["bic_curve"], dpi=dpi)
    plots.pick_vs_epoch(r.picks, r.table, r.choice, subtitle=subtitle, path=out / FIGURES["pick_vs_epoch"], dpi=dpi)
    plots.metric_curves(r.summary, subtitle=subtitle, path=out / FIGURES["metric_curves"], dpi=dpi)
    true_dim = r.meta.get("synthetic", {}).get("true_dim")
    plots.latent_usage(r.summary, kl_per_unit(r), true_dim=true_dim, subtitle=subtitle, path=out / FIGURES["latent_usage"], dpi=dpi)


def selected_model_pictures(r: Results, out: Path):
    """Reconstructions and prior samples of the selected model into out; return the model."""
    from vaebic.model.vae import load_model

    rp, (d, seed) = r.params["report"], r.best
    model = load_model(r.models / f"{d}-{seed}")
    paths = (out / FIGURES["reconstructions"], out / FIGURES["samples"])
    model_pictures(
        model,
        r.test_x[: rp["n_reconstructions"]],
        rp["n_samples"],
        r.meta["image_shape"],
        f"selected model d={d}, seed {seed}",
        paths,
        rp["dpi"],
    )
    return model


def model_pictures(model, x_np, n_samples: int, image_shape: list[int], title: str, paths: tuple[Path, Path], dpi: int) -> None:
    """Reconstructions of the images x_np and n_samples samples from the prior of model, as PNG
    files at paths (reconstructions, samples)."""
    import torch

    from vaebic.model.evaluation import reconstructions_and_samples
    from vaebic.report import plots

    x = torch.from_numpy(x_np).float()
    recon, samples = reconstructions_and_samples(model, x, n_samples)
    plots.model_pictures(
        x.numpy(), recon.numpy(), samples.numpy(), image_shape, title=title, reconstructions_path=paths[0], samples_path=paths[1], dpi=dpi
    )


def write_report(r: Results, out: Path) -> None:
    from vaebic.report.markdown import precision_text, write_markdown

    configs = [json.loads((r.models / f"{d}-{s}" / "config.json").read_text()).get("train", {}) for d, s in r.pairs]
    write_markdown(
        out / "report.md",
        table=r.table,
        choice=r.choice,
        setup=r.setup,
        figures=FIGURES,
        kl_per_unit=kl_per_unit(r),
        active_threshold=r.params["evaluate"]["active_threshold"],
        precision=precision_text(r.records, configs),
        summary=r.summary,
    )
