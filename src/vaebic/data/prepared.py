"""The prepared-data files (``data/prepared/``), the one thing train, evaluate and report read.


Prepared data (``data/prepared/``) is what every later stage reads:

- ``train_x.npy``, ``val_x.npy``, ``test_x.npy``: (N, D) arrays, one flattened image per row:
  the examples the models are fitted on, the validation split that decides when training stops
  (carved from the training examples, ``data.validation_fraction``; it may have no rows), and
  the held-out test split, untouched until the evaluation. For the
  Bernoulli likelihood they are uint8 in {0, 1} (binary inputs as they are; grey levels
  statically binarised: intensity p becomes 1 with probability p, seeded, once, so every model
  sees the same binary data); for the Gaussian and continuous Bernoulli likelihoods, float32
  grey levels in [0, 1].
- ``meta.json``: data set, image shape, split sizes, how the stored values were read as
  intensities (the rule, the source dtype and value range), seeds, and a SHA-256 fingerprint of
  the arrays so that every result can name the exact data it came from.

Stored values are read by one rule for arrays and image files alike (see intensity_scale):
binary 0/1, 8-bit grey levels / 255, 16-bit grey levels / 65535, or floats in [0, 1]; anything
no rule reads is refused, never rescaled to fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaebic.errors import VaebicError

TRAIN_FILE, VALIDATION_FILE, TEST_FILE, META_FILE = "train_x.npy", "val_x.npy", "test_x.npy", "meta.json"


@dataclass(frozen=True)
class Prepared:
    """The prepared data: the training split (what the models are fitted on), the validation split
    (when to stop training; may have no rows), the test split (held out) and meta.json's record."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    meta: dict


def load_prepared(folder: str | Path) -> Prepared:
    """The prepared-data folder's splits and meta record, each array checked against the record."""
    folder = Path(folder)
    hint = "re-run `dvc repro prepare` (or `dvc repro -f prepare`) to rebuild it"
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except FileNotFoundError:
        raise VaebicError(f"{folder / META_FILE}: missing; {hint}") from None
    except ValueError as exc:
        raise VaebicError(f"{folder / META_FILE}: corrupt ({exc}); {hint}") from None
    arrays = []
    for name, n_key in ((TRAIN_FILE, "n_train"), (VALIDATION_FILE, "n_validation"), (TEST_FILE, "n_test")):
        path = folder / name
        try:
            a = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise VaebicError(f"{path}: missing; {hint}") from None
        except Exception as exc:  # truncated file, bad header, pickled object
            raise VaebicError(f"{path}: corrupt or not a .npy array ({exc}); {hint}") from None
        if a.ndim != 2 or a.shape != (meta.get(n_key), meta.get("input_dim")):
            raise VaebicError(f"{path}: shape {a.shape} does not match {META_FILE} ({meta.get(n_key)}, {meta.get('input_dim')}); {hint}")
        arrays.append(a)
    return Prepared(*arrays, meta)
