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

Convergence. A model whose training loss still falls by more than a threshold (nats per example
per epoch, averaged over its last 20% of epochs) may be overtaken by its neighbours with more
epochs; such models are flagged.
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
#: fraction of the epochs at the end of training over which convergence is judged
LAST_FRACTION = 0.2


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


def window_epochs(epochs: int) -> int:
    """The last 20% of epochs (at least one, and fewer than all) over which convergence is judged; 0 for one epoch."""
    return min(epochs - 1, max(1, math.ceil(LAST_FRACTION * epochs))) if epochs > 1 else 0


def loss_drop_per_epoch(losses: list[float]) -> float:
    """Mean fall of the training loss per epoch over the last 20% of epochs (at least one epoch):
    nats per example per epoch, positive while it still improves; NaN after a single epoch."""
    e = len(losses)
    if e < 2:
        return float("nan")
    w = window_epochs(e)
    return (float(losses[-1 - w]) - float(losses[-1])) / w


def converged(drop: float, threshold: float) -> bool:
    """Converged when the loss no longer falls by more than threshold per epoch (unknown: not converged)."""
    return bool(drop <= threshold)


def training_summary(history_path) -> dict:
    """From a model's history.json: epochs, the final training loss (-ELBO, nats per example) and
    its fall per epoch over the last 20% of epochs (None when it cannot be judged)."""
    import json
    from pathlib import Path

    losses = [float(h["loss"]) for h in json.loads(Path(history_path).read_text())]
    drop = loss_drop_per_epoch(losses)
    return {
        "epochs": len(losses),
        "final_loss_nats": losses[-1] if losses else None,
        "loss_drop_per_epoch_nats": None if math.isnan(drop) else drop,
        "window_epochs": window_epochs(len(losses)),
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


def assess(
    table, examples: dict, *, choice: dict, log_likelihood: str, resamples: int, seed: int, converged_below: float
) -> tuple[dict, dict]:
    """Per latent dimension: selection frequencies (BIC, AIC, held-out), the paired comparison with
    the selected d (choice from selection.choose), and, per model, convergence. Returns (columns,
    summary): columns maps a new bic.csv column to its values in the table's row order; summary
    goes into selection.json (numbers only)."""
    criterion, best = choice["criterion"], choice["best_latent_dim"]
    dims = sorted(table.latent_dim.unique().tolist())
    seeds_of = {d: table.loc[table.latent_dim == d, "seed"].tolist() for d in dims}
    k = np.array([int(table.loc[table.latent_dim == d, "n_params"].iloc[0]) for d in dims])

    def averaged(name):  # (D, n): per-example estimates averaged over seeds (mean BIC over seeds = BIC of these)
        rows = [np.mean([examples[(d, s)][name] for s in seeds_of[d]], axis=0) for d in dims]
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"per-example {name} arrays differ in length between models: were they evaluated on the same data?")
        return np.stack(rows)

    train, test = averaged(f"{log_likelihood}_train"), averaged(f"{log_likelihood}_test")
    per_d: dict[str, np.ndarray] = {}
    if resamples > 0:
        counts = resample_counts(train.shape[1], resamples, seed)
        per_d["selection_frequency"] = selection_frequencies(train, k, "bic", counts)
        per_d["selection_frequency_aic"] = selection_frequencies(train, k, "aic", counts)
        per_d["selection_frequency_heldout"] = heldout_frequencies(test, resample_counts(test.shape[1], resamples, seed + 1))
        pc = paired_comparison(train, k, criterion, dims.index(best), counts)
        per_d.update(
            {
                "delta_vs_selected": pc["delta"],
                "delta_vs_selected_lo90": pc["delta_lo"],
                "delta_vs_selected_hi90": pc["delta_hi"],
                "vuong_z": pc["vuong_z"],
            }
        )
    else:
        per_d = {c: np.full(len(dims), np.nan) for c in BOOTSTRAP_COLUMNS}
    at = {d: i for i, d in enumerate(dims)}
    columns = {name: [float(v[at[d]]) for d in table.latent_dim] for name, v in per_d.items()}
    drops = table["loss_drop_per_epoch"].to_numpy(dtype=np.float64)
    columns["converged"] = [converged(v, converged_below) for v in drops]

    seed_picks = {}
    for s in sorted(table.seed.unique().tolist()):
        rows = table[table.seed == s].sort_values([criterion, "latent_dim"])
        seed_picks[str(int(s))] = int(rows.iloc[0]["latent_dim"])
    picks = choice["selected_by"]
    frequency = {
        name: float(per_d[col][at[picks[name]]]) if resamples > 0 else None
        for name, col in (
            ("bic", "selection_frequency"),
            ("aic", "selection_frequency_aic"),
            ("test_log_likelihood", "selection_frequency_heldout"),
        )
    }
    summary = {
        "selection_frequency": frequency,
        "bootstrap_resamples": resamples,
        "bootstrap_seed": seed,
        "seed_picks": seed_picks,
        "models_not_converged": int(len(drops) - sum(columns["converged"])),
        "converged_below": converged_below,
    }
    return columns, summary
