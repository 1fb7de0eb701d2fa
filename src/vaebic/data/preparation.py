"""The prepare stage's work: read a data set, shuffle, cut train/validation/test, binarise,
write the prepared-data files (their format: vaebic.data.prepared).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from vaebic.data import datasets
from vaebic.data.prepared import META_FILE, TEST_FILE, TRAIN_FILE, VALIDATION_FILE
from vaebic.data.readers import describe_reading
from vaebic.errors import VaebicError
from vaebic.model import likelihoods

log = logging.getLogger("vaebic.data")


def binarize(x: np.ndarray, seed: int) -> np.ndarray:
    """Static binarisation: each intensity p in [0, 1] becomes 1 with probability p (seeded)."""
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.uint8)


def split_indices(n: int, test_fraction: float, seed: int, validation_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded shuffle of range(n) cut into disjoint (train, validation, test) index arrays.

    The test split is the first round(n * test_fraction) of the shuffle, whatever
    validation_fraction is; the validation split is the next round(n_rest * validation_fraction),
    carved from the examples that would otherwise all be training examples. Train and test are
    never empty; validation is empty exactly when validation_fraction is 0."""
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n_test > n - 1:
        raise VaebicError(
            f"data.test_fraction={test_fraction} leaves {n_test} test and {n - n_test} training examples out of {n}; both need at least one"
        )
    n_val = int(round((n - n_test) * validation_fraction))
    if validation_fraction > 0 and not 1 <= n_val <= n - n_test - 1:
        raise VaebicError(
            f"data.validation_fraction={validation_fraction} leaves {n_val} validation and {n - n_test - n_val} training examples "
            f"out of the {n - n_test} that are not test examples; both need at least one (or set data.validation_fraction: 0)"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes: names the exact data a result came from."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def prepare(data_params: dict, likelihood: str, out_dir: str | Path) -> dict:
    """Load, shuffle, cut, binarise and write the prepared data; return its meta record.

    The meta record says how the stored values were read (``intensity``: the rule, the source
    dtype and value range, and the mean intensity of the examples used) and whether they were
    binarised: for the Bernoulli likelihood, inputs that are already binary are used as they are.
    """
    # unknown names fail before any reading
    dataset, record = datasets.get_dataset(data_params["name"]), likelihoods.get_likelihood(likelihood)
    raw = datasets.read_raw(data_params["name"], data_params["root"], data_params["download"], data_params)
    x, image_shape = raw.x, raw.shape
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise VaebicError(f"data set {data_params['name']!r}: intensities must be finite and in [0, 1]")
    n_all = len(x)
    order = np.random.default_rng(data_params["split_seed"]).permutation(n_all)
    if data_params["max_examples"] is not None:
        order = order[: data_params["max_examples"]]
    train_idx, val_idx, test_idx = split_indices(
        len(order), data_params["test_fraction"], data_params["split_seed"], data_params["validation_fraction"]
    )
    x = x[order]
    mean_intensity = float(x.mean(dtype=np.float64))
    log.info("%s: read as %s; mean intensity %.4f", data_params["name"], describe_reading(raw.reading), mean_intensity)
    if not record.binarised:
        binarization = "none: grey levels kept"
    elif ((x == 0) | (x == 1)).all():
        x = x.astype(np.uint8)  # what binarize() would return: a 0/1 intensity becomes itself
        binarization = "none: the inputs are binary 0/1 and are used as they are"
        log.info("the inputs are binary (0/1) and are used as they are: the Bernoulli likelihood needs no binarisation")
    else:
        x = binarize(x, data_params["binarize_seed"])
        binarization = f"static: intensity p became 1 with probability p (data.binarize_seed {data_params['binarize_seed']})"
    train_x, val_x, test_x = x[train_idx], x[val_idx], x[test_idx]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, a in ((TRAIN_FILE, train_x), (VALIDATION_FILE, val_x), (TEST_FILE, test_x)):
        np.save(out_dir / name, a)
    meta = {
        "dataset": data_params["name"],
        "image_shape": image_shape,
        "input_dim": int(x.shape[1]),
        "n_available": n_all,
        "n_train": int(len(train_x)),
        "n_validation": int(len(val_x)),
        "n_test": int(len(test_x)),
        "validation_fraction": data_params["validation_fraction"],
        "intensity": {**raw.reading, "mean_intensity": round(mean_intensity, 6)},
        "likelihood": likelihood,
        "binarized": record.binarised,
        "binarization": binarization,
        "split_seed": data_params["split_seed"],
        "binarize_seed": data_params["binarize_seed"],
        "fingerprint": fingerprint(train_x, val_x, test_x),
    }
    if dataset.meta:
        meta.update(dataset.meta(data_params))
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
