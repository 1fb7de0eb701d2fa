"""Stage `report`: the BIC curve, ELBO/reconstruction/KL curves, active units and per-unit KL,
reconstructions and prior samples of the selected model, and reports/report.md tying them to the
table. It publishes to MLflow: the report to the sweep's parent run, each model's evaluation,
criteria and pictures to the model's run, and the winner to the Model Registry.

This module is the report stage's wiring: read the select stage's table and choice, draw
the figures, write reports/report.md, and publish all of it to MLflow (vaebic.report.publish).

The files are built aside and moved into reports/ only when all of it, the MLflow logging
included, succeeded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vaebic.cli import stage_parser
from vaebic.report.results import FIGURES, Results, draw_model_pictures, kl_per_unit_by_model, read_results

log = logging.getLogger("vaebic.report")  # the stage's name in its log lines


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


def draw_figures(r: Results, out: Path) -> None:
    """The BIC curve, the picks by epoch, the metric curves and latent usage over the sweep."""
    from vaebic.report import plots

    dpi, subtitle = r.params["report"]["dpi"], r.setup["subtitle"]
    plots.bic_curve(r.table, r.summary, r.choice, subtitle=subtitle, path=out / FIGURES["bic_curve"], dpi=dpi)
    plots.pick_vs_epoch(r.picks, r.table, r.choice, subtitle=subtitle, path=out / FIGURES["pick_vs_epoch"], dpi=dpi)
    plots.metric_curves(r.summary, subtitle=subtitle, path=out / FIGURES["metric_curves"], dpi=dpi)
    true_dim = r.meta.get("synthetic", {}).get("true_dim")
    plots.latent_usage_figure(
        r.summary, kl_per_unit_by_model(r), true_dim=true_dim, subtitle=subtitle, path=out / FIGURES["latent_usage"], dpi=dpi
    )


def selected_model_pictures(r: Results, out: Path):
    """Reconstructions and prior samples of the selected model into out; return the model."""
    from vaebic.model.vae import load_model

    rp, (d, seed) = r.params["report"], r.best
    model = load_model(r.models / f"{d}-{seed}")
    paths = (out / FIGURES["reconstructions"], out / FIGURES["samples"])
    draw_model_pictures(
        model,
        r.test_x[: rp["n_reconstructions"]],
        rp["n_samples"],
        r.meta["image_shape"],
        f"selected model d={d}, seed {seed}",
        paths,
        rp["dpi"],
    )
    return model


def write_report(r: Results, out: Path) -> None:
    from vaebic.report.markdown import precision_text, write_markdown

    configs = [json.loads((r.models / f"{d}-{s}" / "config.json").read_text()).get("train", {}) for d, s in r.pairs]
    write_markdown(
        out / "report.md",
        table=r.table,
        choice=r.choice,
        setup=r.setup,
        figures=FIGURES,
        kl_per_unit=kl_per_unit_by_model(r),
        active_threshold=r.params["evaluate"]["active_threshold"],
        precision=precision_text(r.records, configs),
        summary=r.summary,
    )


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--metrics", default="metrics")
    ap.add_argument("--models", default="models")
    args = ap.parse_args(argv)
    report(args.params, args.reports, args.metrics, args.data, args.models)
