"""What the report stage reads and draws from: the select stage's table and choice, every model's
evaluation, the prepared data; the figures' file names; one model's pictures. The report's
Markdown (vaebic.report.markdown) and its MLflow publishing (vaebic.report.publish) both read these."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    data = prepared.load_prepared(data_dir)
    test_x, meta = data.test, data.meta
    setup = describe_setup(
        meta, choice["count_params"], choice["log_likelihood"], int(table.k_samples.iloc[0]), p["model"]["gaussian_sigma"]
    )
    summary = criteria.summarise(table)
    pairs = list(zip(table.latent_dim.tolist(), table.seed.tolist()))
    records = criteria.read_records(metrics, pairs)
    picks = pd.read_csv(reports / criteria.PICKS_FILE)
    return Results(p, params_path, reports, Path(models), meta, table, choice, setup, summary, picks, records, test_x)


def kl_per_unit_by_model(r: Results) -> dict:
    """(latent_dim, seed) -> the mean KL of each latent unit on the training split (nats)."""
    return {(rec["latent_dim"], rec["seed"]): rec["train"]["kl_per_unit_nats"] for rec in r.records}


def draw_model_pictures(model, x_np, n_samples: int, image_shape: list[int], title: str, paths: tuple[Path, Path], dpi: int) -> None:
    """Reconstructions of the images x_np and n_samples samples from the prior of model, as PNG
    files at paths (reconstructions, samples)."""
    import torch

    from vaebic.model.evaluation import reconstructions_and_samples
    from vaebic.report import plots

    x = torch.from_numpy(x_np).float()
    recon, samples = reconstructions_and_samples(model, x, n_samples)
    plots.model_pictures_figure(
        x.numpy(), recon.numpy(), samples.numpy(), image_shape, title=title, reconstructions_path=paths[0], samples_path=paths[1], dpi=dpi
    )
