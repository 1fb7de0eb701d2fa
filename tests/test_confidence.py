"""The arithmetic of how sure the pick is: bootstrap selection frequencies, Vuong's paired z,
the convergence rate. Hand-made per-example arrays, checked against direct computations."""

import math

import numpy as np
import pytest

from vaebic import confidence as c
from vaebic.selection import aic, bic


def test_resample_counts_are_seeded_draws_with_replacement():
    counts = c.resample_counts(50, 2000, seed=3)
    assert counts.shape == (2000, 50) and (counts.sum(1) == 50).all() and (counts >= 0).all()
    assert np.array_equal(counts, c.resample_counts(50, 2000, seed=3))
    assert not np.array_equal(counts, c.resample_counts(50, 2000, seed=4))
    # each example is drawn Binomial(n, 1/n) times: mean 1, variance 1 - 1/n
    assert counts.mean() == pytest.approx(1.0)
    assert counts.var() == pytest.approx(1 - 1 / 50, rel=0.05)


def test_a_clearly_better_model_is_selected_in_every_resample():
    rng = np.random.default_rng(0)
    n = 400
    per_example = np.stack([-100 + rng.normal(0, 1, n), -90 + rng.normal(0, 1, n), -101 + rng.normal(0, 1, n)])
    k = np.array([10, 20, 40])
    freq = c.selection_frequencies(per_example, k, "bic", c.resample_counts(n, 500, 0))
    assert freq == pytest.approx([0, 1, 0])


def test_identical_models_split_every_resample_and_exchangeable_ones_split_about_evenly():
    rng = np.random.default_rng(1)
    n, b = 300, 4000
    counts = c.resample_counts(n, b, 0)
    same = rng.normal(-50, 3, n)
    freq = c.selection_frequencies(np.stack([same, same]), np.array([5, 5]), "bic", counts)
    assert list(freq) == [0.5, 0.5]
    # two models whose examples differ by independent noise of the same size: about half each
    base = rng.normal(-50, 3, n)
    a, b_ = base + rng.normal(0, 1, n), base + rng.normal(0, 1, n)
    shift = (a.sum() - b_.sum()) / n  # make their full-data sums equal
    freq = c.selection_frequencies(np.stack([a - shift, b_]), np.array([5, 5]), "aic", counts)
    assert freq.sum() == pytest.approx(1.0) and freq[0] == pytest.approx(0.5, abs=0.05)


def test_frequencies_sum_to_one_and_match_a_loop_over_resampled_indices():
    rng = np.random.default_rng(2)
    n, dims = 60, 5
    per_example = rng.normal(-20, 2, (dims, n)) + np.linspace(0, 0.6, dims)[:, None]
    k = np.array([3, 6, 9, 12, 15])
    b = 300
    idx = np.random.default_rng(7).integers(0, n, (b, n))
    counts = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(float)
    for criterion, score in (
        ("bic", lambda ll: [bic(v, kk, n) for v, kk in zip(ll, k)]),
        ("aic", lambda ll: [aic(v, kk) for v, kk in zip(ll, k)]),
    ):
        wins = np.zeros(dims)
        for i in idx:
            wins[int(np.argmin(score(per_example[:, i].sum(1))))] += 1
        freq = c.selection_frequencies(per_example, k, criterion, counts)
        assert freq.sum() == pytest.approx(1.0)
        assert freq == pytest.approx(wins / b)
    best = np.zeros(dims)
    for i in idx:
        best[int(np.argmax(per_example[:, i].mean(1)))] += 1
    assert c.heldout_frequencies(per_example, counts) == pytest.approx(best / b)


def test_paired_comparison_is_the_criterion_difference_and_vuongs_statistic():
    rng = np.random.default_rng(3)
    n = 500
    base = rng.normal(-80, 5, n)
    per_example = np.stack([base - 2 + rng.normal(0, 1, n), base, base + 0.05 + rng.normal(0, 1, n)])
    k = np.array([100, 150, 300])
    out = c.paired_comparison(per_example, k, "bic", best=1, counts=c.resample_counts(n, 2000, 0))
    sums = per_example.sum(1)
    expect = np.array([bic(s, kk, n) for s, kk in zip(sums, k)])
    assert out["delta"] == pytest.approx(expect - expect[1])
    assert out["delta"][1] == 0 and math.isnan(out["vuong_z"][1])
    for d in (0, 2):
        diff = per_example[1] - per_example[d]
        lr = diff.sum() - (k[1] - k[d]) * math.log(n) / 2  # Vuong's LR with the BIC correction
        z = lr / (math.sqrt(n) * math.sqrt(np.mean(diff**2) - np.mean(diff) ** 2))
        assert out["vuong_z"][d] == pytest.approx(z)
        assert out["delta_lo"][d] < out["delta"][d] < out["delta_hi"][d]
    # d=0 is far worse in fit: a large positive z; the 90% interval is about +-1.645 bootstrap SEs
    assert out["vuong_z"][0] > 10
    se = 2 * math.sqrt(n) * np.std(per_example[1] - per_example[0])
    assert out["delta_hi"][0] - out["delta_lo"][0] == pytest.approx(2 * 1.645 * se, rel=0.1)


@pytest.mark.parametrize(
    "losses, drop",
    [
        ([200.0, 150.0], 50.0),
        ([100.0, 90.0, 85.0, 84.0, 83.5, 83.0, 82.8, 82.7, 82.65, 82.6], (82.7 - 82.6) / 2),
        ([50.0] * 10, 0.0),
        ([100.0], float("nan")),
    ],
)
def test_loss_drop_per_epoch_over_the_last_fifth(losses, drop):
    got = c.loss_drop_per_epoch(losses)
    assert (math.isnan(got) and math.isnan(drop)) or got == pytest.approx(drop)


def test_converged_only_when_the_drop_is_known_and_small():
    assert c.converged(0.01, 0.05) and c.converged(-0.2, 0.05)
    assert not c.converged(0.2, 0.05) and not c.converged(float("nan"), 0.05)


def hand_made_table(seeds=(0, 1), n=200, seed=5):
    """A bic.csv-like table and per-example arrays: d=2 fits worst, d=4 best, d=8 adds parameters for little."""
    import pandas as pd

    from vaebic.selection import bic as bic_of

    rng = np.random.default_rng(seed)
    base = rng.normal(-100, 4, n)
    gain = {2: 0.0, 4: 3.0, 8: 3.1}
    rows, examples = [], {}
    for d in (2, 4, 8):
        for s in seeds:
            ll = {split: base + gain[d] + rng.normal(0, 0.5, n) for split in ("train", "test")}
            examples[(d, s)] = {"iwae_train": ll["train"], "iwae_test": ll["test"]}
            k = 50 * d
            rows.append(
                {
                    "latent_dim": d,
                    "seed": s,
                    "n_train": n,
                    "n_params": k,
                    "bic": bic_of(ll["train"].sum(), k, n),
                    "aic": aic(ll["train"].sum(), k),
                    "loss_drop_per_epoch": 0.5 if d == 8 and s == 1 else 0.01,
                    "iwae_train": ll["train"].mean(),
                    "iwae_test": ll["test"].mean(),
                    **dict.fromkeys(("elbo_train", "elbo_test", "recon_test", "kl_test", "active_units"), 0.0),
                }
            )
    return pd.DataFrame(rows), examples


def test_assess_averages_seeds_pairs_models_and_flags_unconverged_ones():
    from vaebic.selection import choose

    table, examples = hand_made_table()
    choice = choose(table)
    assert choice["best_latent_dim"] == 4
    columns, summary = c.assess(table, examples, choice=choice, log_likelihood="iwae", resamples=500, seed=0, converged_below=0.1)
    freq = dict(zip(table.latent_dim, columns["selection_frequency"]))
    assert sum({d: freq[d] for d in (2, 4, 8)}.values()) == pytest.approx(1.0) and freq[4] > 0.9
    # mean BIC over seeds is the BIC of the per-example estimates averaged over seeds: delta matches the table
    mean_bic = table.groupby("latent_dim").bic.mean()
    delta = dict(zip(table.latent_dim, columns["delta_vs_selected"]))
    assert delta[8] == pytest.approx(mean_bic[8] - mean_bic[4]) and delta[4] == 0
    assert columns["converged"] == [r.loss_drop_per_epoch <= 0.1 for r in table.itertuples()]
    assert summary["models_not_converged"] == 1 and summary["seed_picks"] == {"0": 4, "1": 4}
    assert summary["selection_frequency"]["bic"] == pytest.approx(freq[4])
    # and the report says all of it
    from vaebic.report import confidence_section
    from vaebic.selection import summarise

    for name, values in columns.items():
        table[name] = values
    text = confidence_section(table, summarise(table), {**choice, **summary})
    assert "d = 4 has the lowest mean BIC" in text and "seed 0: d = 4, seed 1: d = 4" in text
    assert "BIC spread over seeds (sd)" in text and "1 of 6 models were still improving" in text


def test_no_bootstrap_leaves_the_frequencies_empty():
    from vaebic.selection import choose

    table, examples = hand_made_table(seeds=(0,))
    columns, summary = c.assess(table, examples, choice=choose(table), log_likelihood="iwae", resamples=0, seed=0, converged_below=0.1)
    assert all(math.isnan(v) for v in columns["selection_frequency"]) and summary["selection_frequency"]["bic"] is None
