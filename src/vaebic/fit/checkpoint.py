"""Training checkpoints: what an interrupted train stage needs to resume and end with the same
weights as a run that was never interrupted.

A checkpoint (``checkpoints/<latent_dim>-<seed>.pt``, written by the train stage every
``train.checkpoint_every`` epochs) holds plain tensors and values only: the weights, Adam's
moments and step counts, the epoch, every random-number generator's state, the per-epoch
history, the MLflow run that wrote it, and ``key``, the configuration it belongs to. It is
written to a temporary file, flushed to disk, then renamed over the previous one, so a crash
leaves the old checkpoint or the new one, never half of either. It is loaded with
``torch.load(weights_only=True)``: a file that would need pickled code is refused. With early
stopping it also holds the best epoch's weights and the stopping rule's count (``best_model``,
``stopping``), so that a run killed inside the patience window ends where an uninterrupted one does.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import torch

from vaebic.errors import VaebicError
from vaebic.files import atomic_file

log = logging.getLogger("vaebic.checkpoint")

FORMAT = 2  # 2: with the early-stopping state (best_model, stopping)
KEYS = ("format", "key", "epoch", "model", "best_model", "stopping", "adam", "rng", "history", "mlflow_run_id")


def config_key(*, latent_dim: int, seed: int, model: dict, train: dict, data_fingerprint: str, device: str) -> str:
    """What a checkpoint must match to be resumed: everything that decides the weights after a
    given epoch. Not train.epochs (training longer or shorter follows the same path up to there),
    not train.checkpoint_every."""
    decides = {k: v for k, v in train.items() if k not in ("epochs", "checkpoint_every")}
    return json.dumps(
        {
            "format": FORMAT,
            "latent_dim": latent_dim,
            "seed": seed,
            "model": model,
            "train": decides,
            "data": data_fingerprint,
            "device": device,
        },
        sort_keys=True,
    )


def save(path: str | Path, state: dict) -> None:
    """Write state atomically: a temporary file beside path, fsync, then rename over path."""
    with atomic_file(path, "wb", fsync=True) as f:
        torch.save({"format": FORMAT, **state}, f)


def load_checkpoint(path: str | Path, key: str, epochs: int) -> dict | None:
    """The checkpoint at path if it belongs to this configuration (key) and stops before `epochs`;
    None when there is none, or it belongs to another configuration (then it is left for the run
    to overwrite). A corrupt file, or one that needs pickled code, is an error naming the file."""
    path = Path(path)
    if not path.exists():
        return None
    remedy = f"delete it to train from the start (`rm {path}`)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the global it would have had to import: "Unsupported global: GLOBAL builtins.exec ...",
        # "Trying to load unsupported GLOBAL posix.system ..."
        lines = [line.strip() for line in str(exc).splitlines()]
        code = next((line for line in lines if "GLOBAL" in line), None)
        if code is not None:
            why = code[code.index("GLOBAL") :].split(". ")[0][:120]
            raise VaebicError(
                f"refusing to load checkpoint {path}: it needs more than tensors and plain values to load, "
                f"and loading it could run arbitrary code ({why}); {remedy}"
            ) from None
        why = next((line.split("WeightsUnpickler error:")[-1].strip() for line in lines if "Unsupported operand" in line), "")
        raise VaebicError(
            f"checkpoint {path} cannot be loaded safely: it is corrupt, or holds more than tensors and plain values "
            f"({why[:120] or 'cannot unpickle'}); {remedy}"
        ) from None
    except Exception as exc:  # truncated, not a torch file, unreadable
        first = str(exc).split(". ")[0][:160]
        raise VaebicError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {first}); {remedy}") from None
    if not isinstance(state, dict) or any(k not in state for k in KEYS):
        missing = [k for k in KEYS if not isinstance(state, dict) or k not in state]
        raise VaebicError(f"checkpoint {path} is not a vaebic training checkpoint (missing {', '.join(missing)}); {remedy}")
    if state["format"] != FORMAT or state["key"] != key:
        log.info("%s was written for another configuration (model, train or data changed): training from the start", path)
        return None
    if not 1 <= state["epoch"] < epochs:
        log.info("%s is at epoch %s, not before train.epochs=%d: training from the start", path, state["epoch"], epochs)
        return None
    return state
