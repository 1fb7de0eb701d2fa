"""How sure the pick is: bootstrap selection frequencies, paired comparisons, convergence.

Selection frequency. The training examples are resampled with replacement B times (seeded). On
each resample every model's ln L is recomputed from its per-example log-likelihood estimates,
paired across models (the same resampled examples for every d), and so its BIC or AIC; the
share of resamples in which a latent dimension has the lowest mean criterion over seeds is its
selection frequency. An exact tie splits the resample's credit equally, so frequencies sum to 1.
For the held-out estimate the test examples are resampled and the highest mean wins.

Because k is the same for every seed of one d, the mean over seeds of BIC equals the BIC of the
per-example estimates averaged over seeds: the bootstrap works on those averages, one row per d.

Paired comparison (Vuong 1989). For the selected d* against another d, with l_i the per-example
estimates (averaged over seeds) and P the criterion's penalty (k ln n for BIC, 2k for AIC):
    delta = C(d) - C(d*) = P(d) - P(d*) - 2 sum_i (l_i(d) - l_i(d*))   (> 0: d* is better)
    z = (delta / 2) / (sqrt(n) * omega),  omega^2 = the variance of l_i(d*) - l_i(d)
which is Vuong's statistic with the penalty correction of the parameter counts; |z| > 1.64 is a
one-sided 5% difference. The 90% interval of delta is the 5th to 95th percentile over resamples.

BIC's assumption, checked on held-out data. BIC counts parameters, k, and takes the training
split's ln L̂ at face value; a neural decoder can spend an extra latent dimension memorising the
training examples, a gain k does not see. When BIC picks a larger d_B than the held-out estimate's
d_H, its choice rests on the training gain g_train = mean l_train(d_B) - mean l_train(d_H) per
example being worth more than the penalty it charged, (k_B - k_H) ln n / (2n) per example. The
held-out gain g_test = mean l_test(d_B) - mean l_test(d_H) says whether the gain is real: if even
the upper end of its 90% interval (bootstrap over the test examples and the Monte-Carlo error of
both estimates, in quadrature) stays below that penalty, the held-out data do not show a gain that
pays for d_B's extra parameters, and `bic_overfit` is true: trust the held-out pick.
"""

from __future__ import annotations

import math

import numpy as np

#: the bic.csv columns the bootstrap fills, one value per latent dimension
BOOTSTRAP_COLUMNS = (
    "selection_frequency",
    "selection_frequency_aic",
    "selection_frequency_heldout",
    "delta_vs_selected",
    "delta_vs_selected_lo90",
    "delta_vs_selected_hi90",
    "vuong_z",
)
#: one-sided 95% (the upper end of a two-sided 90% interval) of a normal distribution
Z90 = 1.6448536269514722


def resample_counts(n: int, b: int, seed: int) -> np.ndarray:
    """(b, n) float64 matrix: how many times each of n examples is drawn in each of b resamples
    with replacement (each row sums to n)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def criterion_draws(per_example: np.ndarray, penalty: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(b, D) criterion values penalty[d] - 2 * (resampled sum of per_example[d]) for each resample."""
    return penalty[None, :] - 2.0 * (counts @ per_example.T)


def winner_shares(values: np.ndarray) -> np.ndarray:
    """Share of rows in which each column holds the lowest value; exact ties split a row's credit."""
    low = values == values.min(axis=1, keepdims=True)
    return (low / low.sum(axis=1, keepdims=True)).mean(axis=0)


def penalty(criterion: str, n_params: np.ndarray, n: int) -> np.ndarray:
    """k ln n (BIC) or 2k (AIC), per model."""
    k = np.asarray(n_params, dtype=np.float64)
    return k * math.log(n) if criterion == "bic" else 2.0 * k


def selection_frequencies(per_example: np.ndarray, n_params: np.ndarray, criterion: str, counts: np.ndarray) -> np.ndarray:
    """Selection frequency of each row (latent dimension) of per_example (D, n) under BIC or AIC."""
    return winner_shares(criterion_draws(per_example, penalty(criterion, n_params, per_example.shape[1]), counts))


def heldout_frequencies(per_example: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Share of resamples of the test examples in which each row has the highest mean estimate."""
    return winner_shares(-(counts @ per_example.T))


def paired_comparison(
    per_example: np.ndarray, n_params: np.ndarray, criterion: str, best: int, counts: np.ndarray, level: float = 0.90
) -> dict[str, np.ndarray]:
    """For each row d against row `best`: delta = C(d) - C(best), its bootstrap interval at `level`,
    and Vuong's z (positive: best is better). The best row itself gets delta 0 and z NaN."""
    n = per_example.shape[1]
    pen = penalty(criterion, n_params, n)
    full = pen - 2.0 * per_example.sum(axis=1)
    delta = full - full[best]
    draws = criterion_draws(per_example, pen, counts)
    spread = draws - draws[:, [best]]
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(spread, [tail, 100 - tail], axis=0)
    diff = per_example[best][None, :] - per_example
    omega = diff.std(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(omega > 0, (delta / 2) / (math.sqrt(n) * omega), np.nan)
    return {"delta": delta, "delta_lo": lo, "delta_hi": hi, "vuong_z": z}


def bic_overfit_check(
    train: np.ndarray,
    test: np.ndarray,
    n_params: np.ndarray,
    dims: list[int],
    picks: dict,
    test_mc_se: np.ndarray,
    counts: np.ndarray | None,
) -> dict:
    """Does the held-out split show the gain BIC's pick rests on? (see the module's docstring)

    train, test: (D, n) per-example estimates (averaged over seeds), rows in the order of dims;
    picks: {"bic": d_B, "test_log_likelihood": d_H}; test_mc_se: (D,) Monte-Carlo standard error of
    each row's held-out mean; counts: (b, n_test) bootstrap resample counts of the test examples,
    or None (then the paired standard error). Returns {"bic_overfit": bool} and, when d_B > d_H,
    "bic_overfit_check" with the numbers, in nats per example."""
    d_b, d_h = picks["bic"], picks["test_log_likelihood"]
    if d_b <= d_h:
        return {"bic_overfit": False}
    b, h = dims.index(d_b), dims.index(d_h)
    n, diff = train.shape[1], test[b] - test[h]
    if counts is not None:
        boot_se = float(np.std(counts @ diff / len(diff), ddof=1))
    else:
        boot_se = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
    gain = float(diff.mean())
    hi = gain + Z90 * math.hypot(boot_se, math.hypot(test_mc_se[b], test_mc_se[h]))
    penalty = float((n_params[b] - n_params[h]) * math.log(n) / (2 * n))
    return {
        "bic_overfit": bool(hi < penalty),
        "bic_overfit_check": {
            "larger_d": d_b,
            "smaller_d": d_h,
            "train_gain": float(train[b].mean() - train[h].mean()),
            "heldout_gain": gain,
            "heldout_gain_hi90": hi,
            "penalty": penalty,
        },
    }


def examples_path(metrics_dir, latent_dim: int, seed: int):
    from pathlib import Path

    return Path(metrics_dir) / f"{latent_dim}-{seed}.examples.npz"


def read_examples(metrics_dir, pairs: list[tuple[int, int]], names: tuple[str, ...]) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """The per-example estimates (names such as iwae_train, elbo_test) of each (latent_dim, seed)."""
    from vaebic.errors import VaebicError

    out = {}
    for d, s in pairs:
        path = examples_path(metrics_dir, d, s)
        try:
            with np.load(path) as f:
                out[(d, s)] = {name: np.asarray(f[name], dtype=np.float64) for name in names}
        except FileNotFoundError:
            raise VaebicError(
                f"{path}: missing; the evaluate stage for latent_dim={d}, seed={s} has not run with this vaebic (run `dvc repro`)"
            ) from None
        except (KeyError, ValueError, OSError) as exc:
            raise VaebicError(f"{path}: unreadable or incomplete ({exc}); re-run `dvc repro -f evaluate@{d}-{s}`") from None
    return out


def assess(table, examples: dict, *, choice: dict, log_likelihood: str, resamples: int, seed: int) -> tuple[dict, dict]:
    """Per latent dimension: selection frequencies (BIC, AIC, held-out) and the paired comparison
    with the selected d (choice from selection.choose); for the sweep: each seed's pick, and
    whether the held-out data bear out BIC's pick (bic_overfit_check). Returns (columns, summary):
    columns maps a new bic.csv column to its values in the table's row order; summary goes into
    selection.json."""
    criterion, best = choice["criterion"], choice["best_latent_dim"]
    dims = sorted(table.latent_dim.unique().tolist())
    k = np.array([int(table.loc[table.latent_dim == d, "n_params"].iloc[0]) for d in dims])
    train, test = (_averaged(table, examples, dims, f"{log_likelihood}_{split}") for split in ("train", "test"))
    counts = test_counts = None
    if resamples > 0:
        counts, test_counts = resample_counts(train.shape[1], resamples, seed), resample_counts(test.shape[1], resamples, seed + 1)
        pc = paired_comparison(train, k, criterion, dims.index(best), counts)
        per_d = {
            "selection_frequency": selection_frequencies(train, k, "bic", counts),
            "selection_frequency_aic": selection_frequencies(train, k, "aic", counts),
            "selection_frequency_heldout": heldout_frequencies(test, test_counts),
            "delta_vs_selected": pc["delta"],
            "delta_vs_selected_lo90": pc["delta_lo"],
            "delta_vs_selected_hi90": pc["delta_hi"],
            "vuong_z": pc["vuong_z"],
        }
    else:
        per_d = {c: np.full(len(dims), np.nan) for c in BOOTSTRAP_COLUMNS}
    at = {d: i for i, d in enumerate(dims)}
    columns = {name: [float(v[at[d]]) for d in table.latent_dim] for name, v in per_d.items()}
    picks = choice["selected_by"]
    frequency = {
        name: float(per_d[col][at[picks[name]]]) if resamples > 0 else None
        for name, col in (
            ("bic", "selection_frequency"),
            ("aic", "selection_frequency_aic"),
            ("test_log_likelihood", "selection_frequency_heldout"),
        )
    }
    mc_se = _heldout_mc_se(table, dims, log_likelihood)
    summary = {
        "selection_frequency": frequency,
        "bootstrap_resamples": resamples,
        "bootstrap_seed": seed,
        "seed_picks": seed_picks(table, criterion),
        **bic_overfit_check(train, test, k, dims, picks, mc_se, test_counts),
    }
    return columns, summary


def _averaged(table, examples: dict, dims: list[int], name: str) -> np.ndarray:
    """(D, n): per-example estimates averaged over seeds (mean BIC over seeds = BIC of these)."""
    rows = [np.mean([examples[(d, s)][name] for s in table.loc[table.latent_dim == d, "seed"]], axis=0) for d in dims]
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"per-example {name} arrays differ in length between models: were they evaluated on the same data?")
    return np.stack(rows)


def _heldout_mc_se(table, dims: list[int], log_likelihood: str) -> np.ndarray:
    """(D,): Monte-Carlo standard error of each d's held-out mean, averaged over seeds (0 for the
    ELBO, whose Monte-Carlo error is not estimated)."""
    if log_likelihood != "iwae":
        return np.zeros(len(dims))
    se = [table.loc[table.latent_dim == d, "iwae_se_test"].to_numpy(dtype=np.float64) for d in dims]
    return np.array([math.sqrt((v**2).sum()) / len(v) for v in se])


def seed_picks(table, criterion: str) -> dict[str, int]:
    """Each seed's own pick: the d with its lowest criterion."""
    picks = {}
    for s in sorted(table.seed.unique().tolist()):
        rows = table[table.seed == s].sort_values([criterion, "latent_dim"])
        picks[str(int(s))] = int(rows.iloc[0]["latent_dim"])
    return picks
