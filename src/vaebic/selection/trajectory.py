"""When the pick settled: the latent dimension each criterion would pick had training stopped at
epoch e, from values every model measures while it trains.

A model trained with a cap of e epochs would hold the weights of its best epoch up to e (early
stopping keeps the best epoch's weights), so its numbers at cap e are those of b(e), the last
epoch up to e that improved its validation estimate. While training, each such epoch records the
training split's ELBO (`train_elbo`) and the validation split's importance-weighted estimate
(`val_iwae`); the final estimates (ln L̂ of the training split, the held-out estimate of the test
split) are measured once, on the final weights. The value of a model at cap e is its final value
less the rise its tracked value made after b(e):

    l_train(e)   = l_train(final)   - [train_elbo(b_final) - train_elbo(b(e))]
    l_heldout(e) = l_heldout(final) - [val_iwae(b_final)  - val_iwae(b(e))]

so the curve ends exactly at the numbers the selection uses, and each criterion's pick at e
(BIC and AIC from l_train, the held-out pick from l_heldout; means over seeds, ties to the smaller
d) ends at the reported pick. `stable_since` is the first epoch from which the pick never changed
again. The trajectory assumes that the gap between the tracked value and the final estimate
(the ELBO's gap to the importance-weighted estimate) changes little near the end of training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

#: a pick that changed in the last LATE_FRACTION of the epochs run (by the longest-trained model)
#: is flagged: it has not settled
LATE_FRACTION = 0.2
CRITERIA = ("bic", "aic", "heldout")
#: in each model folder, beside history.json: how its training ended (written by the train stage)
STOPPING_FILE = "stopping.json"


def read_training_summary(model_dir: str | Path) -> dict:
    """training_summary of the model in model_dir, from its history.json and stopping.json."""
    folder = Path(model_dir)
    history = json.loads((folder / "history.json").read_text())
    stopping = json.loads((folder / STOPPING_FILE).read_text()) if (folder / STOPPING_FILE).exists() else None
    return training_summary(history, stopping)


def training_summary(history: list[dict], stopping: dict | None) -> dict:
    """What the metrics file keeps of a model's training: how it ended, and the epochs whose
    weights it could have kept (those that improved the validation estimate), with their values."""
    kept = [(i, r) for i, r in enumerate(history, 1) if "train_elbo" in r]
    stopping = stopping or {"best_epoch": len(history), "epochs_run": len(history), "stop_reason": "cap"}
    return {
        "best_epoch": int(stopping["best_epoch"]),
        "epochs_run": int(stopping["epochs_run"]),
        "stop_reason": stopping["stop_reason"],
        "improvements": {
            "epoch": [i for i, _ in kept],
            "train_elbo": [float(r["train_elbo"]) for _, r in kept],
            "val_iwae": [float(r["val_iwae"]) if "val_iwae" in r else None for _, r in kept],
        },
    }


def values_by_cap(improvements: dict, final: float, key: str, last_epoch: int) -> np.ndarray | None:
    """(last_epoch,) array: the model's value had training been capped at epoch e = 1..last_epoch
    (see the module's docstring); None when the tracked value was not measured (no validation split)."""
    epochs, tracked = improvements["epoch"], improvements[key]
    if not epochs or any(v is None for v in tracked):
        return None
    at = np.searchsorted(np.asarray(epochs), np.arange(1, last_epoch + 1), side="right") - 1  # index of b(e); -1 before the first
    tracked = np.asarray(tracked, dtype=np.float64)
    out = final - (tracked[-1] - tracked[np.maximum(at, 0)])
    out[at < 0] = math.nan  # no weights to keep yet
    return out


def picks_by_epoch(models: list[dict], n: int) -> dict[str, list[int | None]]:
    """Each criterion's pick at every cap e = 1..E (E: the most epochs any model ran).

    models: one dict per (latent_dim, seed) with latent_dim, n_params (k), training (a
    training_summary), train (final per-example ln L̂ estimate, nats) and heldout (final held-out
    estimate, nats). n: the number of training examples in ln L̂. The held-out entry is None at
    every epoch when no model has a validation split."""
    last = max(m["training"]["epochs_run"] for m in models)
    dims = sorted({m["latent_dim"] for m in models})
    curves = {"train": {d: [] for d in dims}, "heldout": {d: [] for d in dims}}
    for m in models:
        imp = m["training"]["improvements"]
        curves["train"][m["latent_dim"]].append(values_by_cap(imp, m["train"], "train_elbo", last))
        curves["heldout"][m["latent_dim"]].append(values_by_cap(imp, m["heldout"], "val_iwae", last))
    k = {m["latent_dim"]: m["n_params"] for m in models}
    train = np.stack([np.mean(curves["train"][d], axis=0) for d in dims])  # (D, E), means over seeds
    out = {
        "bic": _argmin(np.array([k[d] * math.log(n) for d in dims])[:, None] - 2 * n * train, dims),
        "aic": _argmin(np.array([2.0 * k[d] for d in dims])[:, None] - 2 * n * train, dims),
    }
    if any(c is None for cs in curves["heldout"].values() for c in cs):
        out["heldout"] = [None] * last
    else:
        out["heldout"] = _argmin(-np.stack([np.mean(curves["heldout"][d], axis=0) for d in dims]), dims)
    return out


def _argmin(values: np.ndarray, dims: list[int]) -> list[int | None]:
    """Per column of values (D, E), the dim of the lowest value (ties: the first, the smaller d); None where any is NaN."""
    return [None if np.isnan(col).any() else dims[int(np.argmin(col))] for col in values.T]


def stable_since(picks: list[int | None]) -> int | None:
    """The first epoch (1-based) from which the pick equals the final pick at every later epoch."""
    if not picks or picks[-1] is None:
        return None
    e = len(picks)
    while e > 1 and picks[e - 2] == picks[-1]:
        e -= 1
    return e


def settled(picks: dict[str, list[int | None]], models: list[dict]) -> dict:
    """selection.json's record of when the picks settled, and what is flagged: models that reached
    the cap, and picks that changed in the last LATE_FRACTION of the epochs run."""
    last = max(m["training"]["epochs_run"] for m in models)
    since = {c: stable_since(picks[c]) for c in CRITERIA}
    late_from = last - math.floor(LATE_FRACTION * last) + 1  # a change from here on is late
    return {
        "epochs_run_max": last,
        "pick_stable_since_epoch": since,
        "pick_changed_late": {c: None if since[c] is None else bool(since[c] > 1 and since[c] >= late_from) for c in CRITERIA},
        "models_at_cap": sum(m["training"]["stop_reason"] == "cap" for m in models),
    }
