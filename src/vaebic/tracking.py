"""Every MLflow call lives here; the rest of the library runs with tracking off.

Where runs go: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project root>/mlflow.db`` with
artifacts under ``<project root>/mlartifacts/``. The project root is ``DVC_ROOT`` (set by DVC
for stage commands) or the nearest folder above the working directory holding ``dvc.yaml``.

Runs: one parent run per sweep, named ``sweep-<key>``, where the key hashes the parameters
that define the models (data, model, train, evaluate) and the data fingerprint: adding a latent
dimension or changing the report keeps the parent, changing the learning rate starts a new one.
Under it, one child run per (latent_dim, seed), named ``d<latent_dim>-s<seed>``, opened by the
train stage (its id is kept in the model folder, ``run.json``); a train stage that resumes
from a checkpoint opens a new child linked to the interrupted one. The report logs the table,
figures and the chosen dimension into the parent, and each model's evaluation, BIC, AIC and
pictures into its child. All runs carry ``vaebic.role``
(``sweep`` or ``model``) and provenance tags: the git commit (when there is one), the DVC
stage, the params file's SHA-256 and the prepared data's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from vaebic.errors import VaebicError

log = logging.getLogger("vaebic.tracking")

RUN_FILE = "run.json"
ROLE_TAG = "vaebic.role"
SWEEP_TAG = "vaebic.sweep"


@contextmanager
def uninterrupted():
    """Hold Ctrl-C and SIGTERM until the MLflow call inside is done, then act on them.

    A KeyboardInterrupt raised inside SQLAlchemy, in the middle of a SQLite transaction, can leave
    the transaction open on a connection this process no longer uses, or be swallowed while the
    connection goes back to its pool. The process then holds the store's lock, and its next write
    (ending the run as KILLED) waits for it, MLflow's busy timeout, 20 s per statement, and fails
    with "database is locked"; or training goes on as if Ctrl-C had not been pressed. MLflow's calls
    take milliseconds (registering the champion, seconds), so holding the signal costs nothing a
    user notices; one that waits for another process's lock on the store holds it as long (MLflow
    gives up after 20 s). Python runs signal handlers in the main thread only: elsewhere this does
    nothing.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not None:  # None: a handler Python did not install; leave it
            previous[sig] = signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])  # now, with the handler the process had


def _whole(function):
    """function's MLflow calls run uninterrupted (see uninterrupted)."""
    from functools import wraps

    @wraps(function)
    def call(*args, **kwargs):
        with uninterrupted():
            return function(*args, **kwargs)

    return call


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


def sqlite_store() -> Path | None:
    """The SQLite file the runs go to, or None for a tracking server."""
    uri = tracking_uri()
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


#: seconds to wait for another writer's lock on a SQLite store before giving up (VAEBIC_STORE_WAIT_S)
STORE_WAIT_S = 60.0
#: seconds a tracking server has to answer its health check (VAEBIC_SERVER_ANSWER_S)
ANSWER_TIMEOUT_S = 10.0
ELSEWHERE = "or point MLFLOW_TRACKING_URI at another store"


def _check_reachable(uri: str, timeout_s: float = 3.0) -> None:
    """Fail within seconds, naming the URI, when an http(s) tracking server does not accept
    connections, or accepts them and does not answer (a hung server, the wrong service)."""
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
            "start it (`mlflow server --host 127.0.0.1 --port ...`) or unset MLFLOW_TRACKING_URI to use the local store"
        ) from None
    import urllib.error
    import urllib.request

    wait = float(os.environ.get("VAEBIC_SERVER_ANSWER_S", ANSWER_TIMEOUT_S))
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=wait):
            pass
    except urllib.error.HTTPError:
        pass  # it answers (a proxy may refuse /health): that is all this checks
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VaebicError(
            f"MLflow tracking server {uri} accepts connections but does not answer ({reason or type(exc).__name__}, "
            f"waited {wait:g} s): a hung server, or another service on that port; restart the server, "
            "or unset MLFLOW_TRACKING_URI to use the local store"
        ) from None


def check_sqlite_store(db: Path) -> None:
    """Fail with one line naming the SQLite store, what is wrong with it and what to do, before
    MLflow opens it: not a database (a corrupt or half-copied file), on a read-only file system,
    or locked by another writer for longer than VAEBIC_STORE_WAIT_S seconds (default 60). A
    schema from a newer or older MLflow is told apart when MLflow refuses it (setup)."""
    import sqlite3

    aside = f"move it aside (`mv {db} {db}.broken`) and a new, empty store is made on the next run, {ELSEWHERE}"
    if not db.exists():
        folder = db.parent
        if folder.exists() and not os.access(folder, os.W_OK):
            raise VaebicError(f"MLflow store {db} cannot be created: its folder {folder} is read-only; make it writable, {ELSEWHERE}")
        return
    with open(db, "rb") as f:
        header = f.read(16)
    if header and header != b"SQLite format 3\x00":
        raise VaebicError(f"MLflow store {db} is not a SQLite database (a corrupt or half-copied file?): {aside}")
    if not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)):  # SQLite also writes a journal beside it
        raise VaebicError(f"MLflow store {db} is read-only (a read-only file system or file permissions); make it writable, {ELSEWHERE}")
    wait = float(os.environ.get("VAEBIC_STORE_WAIT_S", STORE_WAIT_S))
    try:
        con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=wait)
    except sqlite3.Error as exc:
        raise VaebicError(f"MLflow store {db} cannot be opened ({exc}); check its permissions, {ELSEWHERE}") from None
    try:
        # (the schema's revision is MLflow's own check, when it opens the store: see setup)
        con.execute("BEGIN IMMEDIATE")  # a write, rolled back at once: can this store be written now?
        con.execute("CREATE TABLE vaebic_write_probe (x)")
        con.rollback()
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise VaebicError(
                f"MLflow store {db} is locked by another writer (another vaebic stage, `mlflow ui`, a sync tool?) and "
                f"stayed locked for {wait:g} s; wait for it or stop it, then run again (VAEBIC_STORE_WAIT_S sets the wait)"
            ) from None
        if "readonly" in text or "read-only" in text:
            raise VaebicError(
                f"MLflow store {db} is read-only (a read-only file system or file permissions); make it writable, {ELSEWHERE}"
            ) from None
        if "not a database" in text or "malformed" in text:
            raise VaebicError(f"MLflow store {db} is corrupt ({text}): {aside}") from None
        raise VaebicError(f"MLflow store {db} cannot be used ({text}): {aside}") from None
    finally:
        con.close()


def store_fault(exc: BaseException) -> str | None:
    """One line for a tracking-store failure that struck after the checks at setup (another writer
    took the lock mid-run, the disk filled up, the server went away), or None for anything else."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if "database is locked" in text:
        return f"MLflow store {tracking_uri()} was locked by another writer for too long; wait for it or stop it, then run again"
    if "readonly database" in text or "disk I/O error" in text or "database or disk is full" in text:
        return f"MLflow store {tracking_uri()} cannot be written ({text[:160]}); free space or make it writable, {ELSEWHERE}"
    if "file is not a database" in text or "malformed" in text:
        return f"MLflow store {tracking_uri()} is corrupt ({text[:160]}); move it aside, {ELSEWHERE}"
    if name in ("MaxRetryError", "ConnectionError", "ReadTimeoutError") or "Max retries exceeded" in text:
        return f"MLflow tracking server {tracking_uri()} stopped answering ({text[:160]}); restart it and run again"
    return None


def _check_schema(db: Path, revision: str) -> None:
    """The store's schema revision against the installed MLflow's migrations (alembic's public API)."""
    import mlflow
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(Path(mlflow.__file__).parent / "store" / "db_migrations"))
    head = scripts.get_current_head()
    if revision == head:
        return
    known = {r.revision for r in scripts.walk_revisions()}
    if revision not in known:
        raise VaebicError(
            f"MLflow store {db} was written by a newer MLflow than the installed {mlflow.__version__} (its schema revision "
            f"{revision} is unknown here); use that MLflow version (`pip install -U mlflow`) to open it, {ELSEWHERE}"
        )
    raise VaebicError(
        f"MLflow store {db} was made by an older MLflow (schema revision {revision}, {mlflow.__version__} expects {head}); "
        f"back it up, then upgrade it with `mlflow db upgrade sqlite:///{db}`, {ELSEWHERE}"
    )


def setup(experiment: str) -> str:
    """Point MLflow at the store, create store and experiment once (under a lock), return its id."""
    uri = tracking_uri()
    _check_reachable(uri)
    # A dead server should cost seconds, not minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # No usage reports leave the machine (as with DVC's analytics, turned off in .dvc/config).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # The report re-reads a logged table: no progress bar in the stage's log for a file of kilobytes.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(uri)
    db = sqlite_store()
    if db is not None:
        check_sqlite_store(db)
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VaebicError(f"MLflow store {db} cannot be created ({exc.strerror or exc}); {ELSEWHERE}") from None
        # Creating the SQLite schema and the experiment is not safe for concurrent first writers.
        with _store_lock():
            try:
                return _get_or_create(mlflow, experiment, (db.parent / "mlartifacts").as_uri())
            except Exception as exc:
                # MLflow compares the store's schema with its own when it opens it, and refuses
                # both newer and older ones with the same words: say which, and what to do.
                found = re.search(r"out-of-date database schema \(found version (\w+)", str(exc))
                if found:
                    _check_schema(db, found.group(1))
                raise
    try:
        return _get_or_create(mlflow, experiment, None)
    except Exception as exc:
        raise VaebicError(f"MLflow tracking server {uri} refused the request ({type(exc).__name__}: {exc})") from None


def _store_lock():
    """A lock file beside a SQLite store, for get-or-create steps that concurrent stage processes
    could race on; nothing for a tracking server, where those steps settle a race themselves
    (_get_or_create, _sweep_run_id)."""
    from contextlib import nullcontext

    db = sqlite_store()
    if db is None:
        return nullcontext()
    from filelock import FileLock

    return FileLock(f"{db}.lock", timeout=120)


@_whole
def _get_or_create(mlflow, name: str, artifact_location: str | None) -> str:
    """The experiment's id, created if it is not there. Safe when another process creates it
    meanwhile: train stages on a cluster's workers, starting together against a fresh tracking
    server (which serialises each write, not a get-then-create), take the one that was made."""
    from mlflow.exceptions import MlflowException

    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = mlflow.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:  # not a lost race: the refusal stands
                raise
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise VaebicError(
                f"MLflow experiment {name!r} is deleted; restore it (`mlflow experiments restore`) or set mlflow.experiment to a new name"
            )
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def run_name(latent_dim: int, seed: int) -> str:
    return f"d{latent_dim}-s{seed}"


def sweep_key(params: dict, fingerprint: str) -> str:
    """Names a sweep: the parameters that define its models, and the data they saw."""
    defining = {section: params[section] for section in ("data", "model", "train", "evaluate")}
    defining["train"] = {k: v for k, v in defining["train"].items() if k != "checkpoint_every"}  # how often to save is not the model
    return hashlib.sha256(json.dumps([defining, fingerprint], sort_keys=True).encode()).hexdigest()[:12]


def provenance(stage: str, params_path: str | os.PathLike, fingerprint: str) -> dict:
    """Tags that say where a run came from: DVC stage, params file hash, data fingerprint, git commit."""
    tags = {
        "dvc.stage": stage,
        "params.sha256": hashlib.sha256(open(params_path, "rb").read()).hexdigest(),
        "data.fingerprint": fingerprint,
    }
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            tags["git.commit"] = head.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass  # no git: the other tags still name the inputs
    return tags


@contextmanager
def _failure_reason():
    """On an exception (a NaN loss, Ctrl-C, ...) tag the active run with its cause, so the UI says
    why; MLflow then ends it as FAILED, or here as KILLED when it was interrupted (Ctrl-C, SIGTERM)."""
    import mlflow

    try:
        yield
    except BaseException as exc:
        with uninterrupted():
            mlflow.set_tag("vaebic.failure", f"{type(exc).__name__}: {exc}"[:4000] if str(exc) else type(exc).__name__)
            if isinstance(exc, KeyboardInterrupt):
                mlflow.end_run("KILLED")
        raise


@_whole
def link_resumed(old_run_id: str | None, epoch: int) -> None:
    """The active run resumes training that run old_run_id began and did not finish: tag both
    ways, and end the old one as KILLED if it still says RUNNING (its process died without a word:
    SIGKILL, the machine went down, the kernel's out-of-memory killer)."""
    import mlflow

    new = mlflow.active_run().info.run_id
    tags = {"vaebic.resumed_at_epoch": str(epoch)}
    note = f"Resumed from a checkpoint at epoch {epoch}"
    client = mlflow.MlflowClient()
    try:
        old = client.get_run(old_run_id) if old_run_id else None
    except Exception:  # not in this store (the tracking URI changed since)
        old = None
        log.warning("MLflow run %s (that wrote the checkpoint) is not in %s; not linked", old_run_id, tracking_uri())
    if old is not None:
        if old.info.status == "RUNNING":
            client.set_tag(old_run_id, "vaebic.failure", "the process stopped without a word (killed: SIGKILL, out of memory, a reboot)")
            client.set_terminated(old_run_id, "KILLED")
        client.set_tag(old_run_id, "vaebic.resumed_by", new)
        tags["vaebic.resumed_from"] = old_run_id
        note += f" written by run {old_run_id} ({old.info.run_name}, interrupted)"
    mlflow.set_tags({**tags, "mlflow.note.content": note + "."})


def _reopened(tags: dict) -> dict:
    """Provenance tags for a run re-opened by a later stage: dvc.stage keeps the creating stage,
    dvc.stage.last names this one."""
    return {k: v for k, v in tags.items() if k != "dvc.stage"} | {"dvc.stage.last": tags["dvc.stage"]}


def _sweep_run_id(experiment_id: str, key: str) -> str:
    """The parent run of sweep `key`, created on first use (under the store's lock for SQLite;
    Ctrl-C still stops a wait for the lock). A tracking server has no such lock: stages on two
    workers may both create one, and each then keeps the oldest and deletes its own."""
    import mlflow

    with _store_lock(), uninterrupted():
        client = mlflow.MlflowClient()
        found = _sweep_parents(client, experiment_id, key)
        if found:
            return found[0].info.run_id
        run = client.create_run(experiment_id, run_name=f"sweep-{key}", tags={ROLE_TAG: "sweep", SWEEP_TAG: key})
        client.set_terminated(run.info.run_id)
        first = _sweep_parents(client, experiment_id, key)[0]
        if first.info.run_id != run.info.run_id:
            client.delete_run(run.info.run_id)
        return first.info.run_id


def _sweep_parents(client, experiment_id: str, key: str) -> list:
    """The active parent runs of sweep `key`, oldest first (ties by run id: the same order in every process)."""
    runs = client.search_runs([experiment_id], f"tags.`{SWEEP_TAG}` = '{key}' and tags.`{ROLE_TAG}` = 'sweep'")
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


@contextmanager
def _run(**start):
    """mlflow.start_run(**start) as a context, as MLflow's own (ending FINISHED, or FAILED on an
    exception; _failure_reason tags the cause and ends it as KILLED on Ctrl-C), with the start and
    the end uninterrupted."""
    import mlflow

    with uninterrupted():
        run = mlflow.start_run(**start)
    status = "FAILED"
    try:
        with _failure_reason():
            yield run
        status = "FINISHED"
    finally:
        with uninterrupted():
            if mlflow.active_run() is not None:
                mlflow.end_run(status)


@contextmanager
def model_run(experiment: str, latent_dim: int, seed: int, sweep: str, tags: dict):
    """A new MLflow run for one (latent_dim, seed) model, a child of its sweep's run.
    tags: provenance() of the calling stage.

    An exception inside the block ends the run as FAILED, Ctrl-C or SIGTERM as KILLED.
    """
    experiment_id = setup(experiment)
    parent = _sweep_run_id(experiment_id, sweep)
    all_tags = {ROLE_TAG: "model", SWEEP_TAG: sweep, "latent_dim": str(latent_dim), "seed": str(seed), **tags}
    with _run(run_name=run_name(latent_dim, seed), parent_run_id=parent, tags=all_tags) as run:
        yield run


@contextmanager
def sweep_run(experiment: str, sweep: str, tags: dict):
    """Re-open the sweep's parent run (creating it if need be) to log the report into it."""
    experiment_id = setup(experiment)
    with _run(run_id=_sweep_run_id(experiment_id, sweep)) as run:
        set_tags(_reopened(tags))
        yield run


@_whole
def run_exists(run_id: str | None) -> bool:
    """Whether run_id names a run in the current store (a model folder may come from another store)."""
    import mlflow

    if not run_id:
        return False
    try:
        mlflow.MlflowClient().get_run(run_id)
        return True
    except Exception:
        return False


@_whole
def log_to(run_id: str, metrics: dict, artifacts: tuple = (), tags: dict | None = None) -> None:
    """Log metrics (one batch), artifacts and tags into another run (by id) without opening it."""
    import time

    import mlflow
    from mlflow.entities import Metric, RunTag

    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(
        run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()], tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()]
    )
    for path in artifacts:
        client.log_artifact(run_id, str(path))


@_whole
def log_params(params: dict) -> None:
    import mlflow

    mlflow.log_params({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()})


@_whole
def log_metrics(metrics: dict, step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


@_whole
def log_epochs(epochs: list[tuple[int, dict, int]]) -> None:
    """Several epochs' metrics into the active run in one write: [(step, {name: value}, timestamp in
    ms)], each value with the step and time of its epoch (MLflow splits what exceeds its batch limit)."""
    import mlflow
    from mlflow.entities import Metric

    metrics = [Metric(name, float(value), ms, step) for step, values, ms in epochs for name, value in values.items()]
    if metrics:
        mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=metrics)


@_whole
def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_path)


@_whole
def log_table(df, artifact_file: str) -> None:
    import mlflow

    mlflow.log_table(df, artifact_file=artifact_file)


@_whole
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


def champion_requirements() -> list[str]:
    """What loading the champion needs besides mlflow (which MLflow adds itself): the exported
    graph holds no pickled code, so torch and numpy (for pyfunc's inputs), pinned as installed
    without a local version label (torch 2.14.1+cu126 -> torch==2.14.1, installable from PyPI,
    as MLflow pins them itself).

    Given explicitly because MLflow would otherwise infer them by importing the model in a
    subprocess: about 6.5 of the report stage's 17 s on a 2-core CPU, and it lists every module
    the process happened to import (tqdm, pandas, pydot, ...).
    """
    from importlib.metadata import version

    from packaging.version import Version

    return [f"{p}=={Version(version(p)).public}" for p in ("torch", "numpy")]


@_whole
def champion_version(name: str, run_id: str) -> str | None:
    """The version the alias `champion` of registered model `name` points at, if that version is
    the model of run run_id (the pick did not move); None otherwise, or when there is none yet."""
    import mlflow

    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
    except mlflow.exceptions.MlflowException:  # no such model or alias
        return None
    return str(version.version) if version.run_id == run_id else None


@_whole
def register_champion(model, name: str, run_id: str) -> str:
    """Log the selected model into its own run in MLflow's pickle-free 'pt2' format (torch.export),
    register it under `name`, and move the alias `champion` to the new version; return the version.

    Load it with mlflow.pytorch.load_model(f"models:/{name}@champion"): the result is a
    torch.fx GraphModule with forward(x, z) -> (mu, logvar, decoded), no pickled code involved.
    """
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from vaebic.model.vae import EncodeDecode

    d, n_in = model.latent_dim, model.config.input_dim
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_in), "x"), TensorSpec(np.dtype(np.float32), (-1, d), "z")])
    )
    example = (np.zeros((2, n_in), np.float32), np.zeros((2, d), np.float32))
    with mlflow.start_run(run_id=run_id), torch.no_grad():
        info = mlflow.pytorch.log_model(
            EncodeDecode(model.cpu().eval()),
            name="model",
            input_example=example,
            signature=signature,
            serialization_format="pt2",
            pip_requirements=champion_requirements(),
            registered_model_name=name,
            await_registration_for=60,
        )
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version)
    return version
