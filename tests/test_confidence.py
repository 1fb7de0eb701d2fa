"""The arithmetic of how sure the pick is: bootstrap selection frequencies, Vuong's paired z,
whether held-out data bear BIC's pick out. Hand-made per-example arrays, checked against direct computations."""

import math

import numpy as np
import pytest

from vaebic.selection import confidence as c
from vaebic.selection.criteria import aic, bic


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


def overfit_case(test_gain: float, n: int = 2000, n_test: int = 500, noise: float = 1.0, seed: int = 0):
    """d=3 and d=4 rows: d=4 fits the training examples 1.9 nats per example better; on the test
    examples, test_gain better. k: 400 more decoder parameters for d=4."""
    rng = np.random.default_rng(seed)

    def centred(m):  # noise whose mean is exactly 0: the gains are exactly as stated
        e = rng.normal(0, noise, m)
        return e - e.mean()

    base_train, base_test = rng.normal(-480, 5, n), rng.normal(-490, 5, n_test)
    train = np.stack([base_train, base_train + 1.9 + centred(n)])
    test = np.stack([base_test, base_test + test_gain + centred(n_test)])
    return train, test, np.array([2000, 2400])


def test_bic_overfit_when_the_held_out_split_does_not_show_the_gain_bic_rests_on():
    # the grey-image case: +1.9 nats per example on the training split, nothing on the test split
    train, test, k = overfit_case(test_gain=-0.03)
    picks = {"bic": 4, "test_log_likelihood": 3}
    got = c.bic_overfit_check(train, test, k, [3, 4], picks, np.array([0.01, 0.01]), c.resample_counts(500, 400, 1))
    check = got["bic_overfit_check"]
    assert got["bic_overfit"] is True and (check["larger_d"], check["smaller_d"]) == (4, 3)
    # BIC's charge for 400 more parameters, per example: 400 ln 2000 / (2 x 2000) = 0.76 nats
    assert check["penalty"] == pytest.approx(400 * math.log(2000) / 4000)
    assert check["train_gain"] == pytest.approx(train[1].mean() - train[0].mean()) and check["train_gain"] > check["penalty"]
    assert check["heldout_gain"] == pytest.approx(test[1].mean() - test[0].mean())
    # the upper end: the gain plus 1.645 standard errors, bootstrap (~ sd of the differences / sqrt 500) and Monte Carlo
    se = math.hypot(np.std(test[1] - test[0]) / math.sqrt(500), math.hypot(0.01, 0.01))
    assert check["heldout_gain_hi90"] == pytest.approx(check["heldout_gain"] + 1.645 * se, rel=0.1)
    assert check["heldout_gain_hi90"] < check["penalty"]


def test_no_bic_overfit_when_the_held_out_error_admits_the_gain_or_bic_is_the_smaller_pick():
    # the same gains, but a held-out split of 20 examples with noisy differences: it cannot tell
    train, test, k = overfit_case(test_gain=-0.03, n_test=20, noise=3.0)
    got = c.bic_overfit_check(train, test, k, [3, 4], {"bic": 4, "test_log_likelihood": 3}, np.zeros(2), None)
    assert got["bic_overfit"] is False and got["bic_overfit_check"]["heldout_gain_hi90"] > got["bic_overfit_check"]["penalty"]
    # a large Monte-Carlo error of the held-out estimates says the same
    train, test, k = overfit_case(test_gain=-0.03)
    assert (
        c.bic_overfit_check(train, test, k, [3, 4], {"bic": 4, "test_log_likelihood": 3}, np.array([0.5, 0.5]), None)["bic_overfit"]
        is False
    )
    # BIC no larger than the held-out pick: nothing to check
    assert c.bic_overfit_check(train, test, k, [3, 4], {"bic": 3, "test_log_likelihood": 4}, np.zeros(2), None) == {"bic_overfit": False}
    assert c.bic_overfit_check(train, test, k, [3, 4], {"bic": 4, "test_log_likelihood": 4}, np.zeros(2), None) == {"bic_overfit": False}


def hand_made_table(seeds=(0, 1), n=200, seed=5):
    """A bic.csv-like table and per-example arrays: d=2 fits worst, d=4 best, d=8 adds parameters for little."""
    import pandas as pd

    from vaebic.selection.criteria import bic as bic_of

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
                    "iwae_se_test": 0.05,
                    "iwae_train": ll["train"].mean(),
                    "iwae_test": ll["test"].mean(),
                    **dict.fromkeys(("elbo_train", "elbo_test", "recon_test", "kl_test", "active_units"), 0.0),
                }
            )
    return pd.DataFrame(rows), examples


def test_assess_averages_seeds_pairs_models_and_checks_bic_on_held_out_data():
    from vaebic.selection.criteria import choose

    table, examples = hand_made_table()
    choice = choose(table)
    assert choice["best_latent_dim"] == 4
    columns, summary = c.assess(table, examples, choice=choice, log_likelihood="iwae", resamples=500, seed=0)
    freq = dict(zip(table.latent_dim, columns["selection_frequency"]))
    assert sum({d: freq[d] for d in (2, 4, 8)}.values()) == pytest.approx(1.0) and freq[4] > 0.9
    # mean BIC over seeds is the BIC of the per-example estimates averaged over seeds: delta matches the table
    mean_bic = table.groupby("latent_dim").bic.mean()
    delta = dict(zip(table.latent_dim, columns["delta_vs_selected"]))
    assert delta[8] == pytest.approx(mean_bic[8] - mean_bic[4]) and delta[4] == 0
    assert summary["seed_picks"] == {"0": 4, "1": 4}
    assert summary["bic_overfit"] is False  # BIC and the held-out estimate agree on 4
    assert summary["selection_frequency"]["bic"] == pytest.approx(freq[4])
    # and the report says all of it
    from vaebic.report.markdown import confidence_section
    from vaebic.selection.criteria import summarise

    for name, values in columns.items():
        table[name] = values
    text = confidence_section(table, summarise(table), {**choice, **summary})
    assert "d = 4 has the lowest mean BIC" in text and "seed 0: d = 4, seed 1: d = 4" in text
    assert "BIC spread over seeds (sd)" in text


def test_no_bootstrap_leaves_the_frequencies_empty():
    from vaebic.selection.criteria import choose

    table, examples = hand_made_table(seeds=(0,))
    columns, summary = c.assess(table, examples, choice=choose(table), log_likelihood="iwae", resamples=0, seed=0)
    assert all(math.isnan(v) for v in columns["selection_frequency"]) and summary["selection_frequency"]["bic"] is None
