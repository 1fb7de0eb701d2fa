"""Every MLflow call lives here; the rest of the library runs with tracking off.

Where runs go: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project root>/mlflow.db`` with
artifacts under ``<project root>/mlartifacts/``. The project root is ``DVC_ROOT`` (set by DVC
for stage commands) or the nearest folder above the working directory holding ``dvc.yaml``.

Runs: one per (latent_dim, seed), named ``d<latent_dim>-s<seed>``, opened by the train stage
and re-opened by the evaluate stage (its id is kept in the model folder, ``run.json``); one
``summary`` run per report. All carry the tag ``vaebic.role`` (``model`` or ``summary``), so
the UI can filter and compare them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from vaebic.errors import VaebicError

log = logging.getLogger("vaebic.tracking")

RUN_FILE = "run.json"
ROLE_TAG = "vaebic.role"


def project_root() -> Path:
    """DVC_ROOT when DVC runs the stage; otherwise the nearest folder with dvc.yaml, else the cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _check_reachable(uri: str, timeout_s: float = 3.0) -> None:
    """Fail within seconds, naming the URI, when an http(s) tracking server does not answer."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise VaebicError(
            f"MLflow tracking server {uri} is unreachable ({exc.strerror or exc}); "
            "start it (`mlflow server --host 127.0.0.1 --port ...`) or unset MLFLOW_TRACKING_URI to use the local store") from None


def setup(experiment: str) -> str:
    """Point MLflow at the store, create store and experiment once (under a lock), return its id."""
    uri = tracking_uri()
    _check_reachable(uri)
    # A dead server should cost seconds, not minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import mlflow

    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        from filelock import FileLock

        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        # Creating the SQLite schema and the experiment is not safe for concurrent first writers.
        with FileLock(str(db) + ".lock", timeout=120):
            return _get_or_create(mlflow, experiment, (db.parent / "mlartifacts").as_uri())
    try:
        return _get_or_create(mlflow, experiment, None)
    except Exception as exc:
        raise VaebicError(f"MLflow tracking server {uri} refused the request ({type(exc).__name__}: {exc})") from None


def _get_or_create(mlflow, name: str, artifact_location: str | None) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        exp_id = mlflow.create_experiment(name, artifact_location=artifact_location)
    else:
        if exp.lifecycle_stage == "deleted":
            raise VaebicError(f"MLflow experiment {name!r} is deleted; restore it (`mlflow experiments restore`) or set mlflow.experiment to a new name")
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def run_name(latent_dim: int, seed: int) -> str:
    return f"d{latent_dim}-s{seed}"


@contextmanager
def model_run(experiment: str, latent_dim: int, seed: int, stage: str, run_id: str | None = None):
    """The MLflow run of one (latent_dim, seed) model: re-opened when run_id names a run in the store.

    An exception inside the block ends the run as FAILED (MLflow's start_run does that).
    """
    setup(experiment)
    import mlflow

    if run_id is not None:
        try:
            mlflow.get_run(run_id)
        except Exception:
            log.warning("MLflow run %s (from the model folder) is not in %s; logging to a new run", run_id, tracking_uri())
            run_id = None
    tags = {ROLE_TAG: "model", "latent_dim": str(latent_dim), "seed": str(seed), "dvc.stage": stage}
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name(latent_dim, seed), tags=None if run_id else tags) as run:
        if run_id:
            mlflow.set_tag("dvc.stage.last", stage)
        yield run


@contextmanager
def summary_run(experiment: str, stage: str):
    setup(experiment)
    import mlflow

    with mlflow.start_run(run_name="summary", tags={ROLE_TAG: "summary", "dvc.stage": stage}) as run:
        yield run


def log_params(params: dict) -> None:
    import mlflow

    mlflow.log_params({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()})


def log_metrics(metrics: dict, step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_table(df, artifact_file: str) -> None:
    import mlflow

    mlflow.log_table(df, artifact_file=artifact_file)


def set_tags(tags: dict) -> None:
    import mlflow

    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def save_run_id(folder: str | Path, run_id: str) -> None:
    (Path(folder) / RUN_FILE).write_text(json.dumps({"mlflow_run_id": run_id, "tracking_uri": tracking_uri()}, indent=2) + "\n")


def load_run_id(folder: str | Path) -> str | None:
    try:
        return json.loads((Path(folder) / RUN_FILE).read_text()).get("mlflow_run_id")
    except (FileNotFoundError, ValueError):
        return None
