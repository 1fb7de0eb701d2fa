"""MLflow tracking against a real SQLite store."""

import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from vaebic import tracking
from vaebic.errors import VaebicError


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A project folder without a store yet: the first tracking.setup creates it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path


@pytest.fixture
def migrated(migrated_store, monkeypatch):
    """A project folder whose store exists already, at the current schema (conftest.py)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(migrated_store))
    return migrated_store


def test_store_is_anchored_at_dvc_root_wherever_the_stage_runs(store, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert tracking.tracking_uri() == f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri() == "http://127.0.0.1:1"


def test_without_dvc_root_the_folder_holding_dvc_yaml_is_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "stages").mkdir()
    monkeypatch.chdir(tmp_path / "stages")
    assert tracking.project_root() == tmp_path


def test_concurrent_first_writers_share_one_store_and_experiment(store):
    code = "from vaebic import tracking; print(tracking.setup('race'))"
    env = {**os.environ, "DVC_ROOT": str(store)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    ids = {r[0].strip().splitlines()[-1] for r in results}
    assert len(ids) == 1
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    assert [e.name for e in client.search_experiments() if e.name == "race"] == ["race"]
    assert client.get_experiment(ids.pop()).artifact_location == (store / "mlartifacts").as_uri()


@pytest.mark.parametrize(
    "revision, expected", [("ffffffffffff", "was written by a newer MLflow"), ("oldest", "was made by an older MLflow")]
)
def test_a_store_of_another_mlflow_version_is_one_line_naming_which(revision, expected, migrated_store):
    """MLflow refuses both with the same words; vaebic says which, and what to do. The store is a
    copy of one tracking.setup made (conftest.py's migrated_store), its revision then changed."""
    import sqlite3

    import mlflow
    from alembic.script import ScriptDirectory

    if revision == "oldest":  # a real revision of the installed MLflow's migrations, the first one
        scripts = ScriptDirectory(str(Path(mlflow.__file__).parent / "store" / "db_migrations"))
        revision = list(scripts.walk_revisions())[-1].revision
    env = {**os.environ, "DVC_ROOT": str(migrated_store)}
    env.pop("MLFLOW_TRACKING_URI", None)
    code = "from vaebic.cli import run_cli; from vaebic import tracking; run_cli(lambda: tracking.setup('x'))"
    with sqlite3.connect(migrated_store / "mlflow.db") as con:
        con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 1 and len(lines) == 1 and "Traceback" not in again.stderr, again.stderr
    assert lines[0].startswith(f"error: MLflow store {migrated_store / 'mlflow.db'} {expected}") and revision in lines[0]


def test_a_failing_block_ends_its_run_as_failed(migrated):
    with pytest.raises(RuntimeError):
        with tracking.model_run("exp", 3, 1, "sweepkey", {"dvc.stage": "train@3-1"}) as run:
            tracking.log_metrics({"train_loss": 1.0}, step=1)
            raise RuntimeError("boom")
    import mlflow

    r = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri()).get_run(run.info.run_id)
    assert r.info.status == "FAILED" and r.data.tags["vaebic.failure"] == "RuntimeError: boom"
    assert r.info.run_name == "d3-s1" and r.data.tags["dvc.stage"] == "train@3-1"


def test_unreachable_server_fails_in_seconds_naming_the_uri(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    with pytest.raises(VaebicError, match=f"MLflow tracking server {uri} is unreachable"):
        tracking.setup("exp")
    assert time.monotonic() - start < 5


def test_runs_metrics_and_artifacts_reach_a_real_tracking_server(mlflow_server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    with tracking.model_run("remote", 4, 0, "k", {"dvc.stage": "train@4-0"}) as run:
        tracking.log_metrics({"train_loss": 9.0}, step=1)
        tracking.log_artifact(artifact)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    r = client.get_run(run.info.run_id)
    assert r.info.status == "FINISHED" and r.data.metrics["train_loss"] == 9.0
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    assert (tmp_path / "server-artifacts").exists()

    # Two train stages on a cluster's workers, first to a fresh server, both find no experiment and
    # both create it: the one whose create the server refuses takes the one that was made. The
    # interleaving is forced: this process reads "no experiment" once more after it exists.
    created = client.create_experiment("raced")
    reads = []
    real_get = mlflow.get_experiment_by_name

    def first_read_stale(name):
        reads.append(name)
        return None if len(reads) == 1 else real_get(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", first_read_stale)
    assert tracking.setup("raced") == created and len(reads) == 2

    # Likewise the sweep's parent run: the other stage made one after this one found none; this one
    # makes its own, then keeps the oldest and deletes its own, as the other stage keeps the oldest.
    monkeypatch.setattr(mlflow, "get_experiment_by_name", real_get)
    tags = {"vaebic.role": "sweep", "vaebic.sweep": "raced-sweep"}
    other = client.create_run(created, run_name="sweep-raced-sweep", tags=tags).info.run_id
    searches = []
    real_search = mlflow.MlflowClient.search_runs

    def first_search_empty(self, *args, **kwargs):
        searches.append(args)
        return [] if len(searches) == 1 else real_search(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "search_runs", first_search_empty)
    with tracking.model_run("raced", 2, 0, "raced-sweep", {"dvc.stage": "train@2-0"}) as child:
        pass
    monkeypatch.setattr(mlflow.MlflowClient, "search_runs", real_search)
    assert child.data.tags["mlflow.parentRunId"] == other and len(searches) == 2
    parents = client.search_runs([created], "tags.`vaebic.role` = 'sweep'")
    assert [r.info.run_id for r in parents] == [other]  # its own was deleted


def test_children_from_separate_processes_share_one_parent_per_sweep(migrated):
    """Four train stages' processes start at once, each the first of its sweep to look for the
    parent run. (Creating the store itself concurrently: test_concurrent_first_writers_share_one_store_and_experiment.)"""
    code = (
        "import sys; from vaebic import tracking\n"
        "with tracking.model_run('exp', int(sys.argv[1]), 0, sys.argv[2], {'dvc.stage': 'train'}) as r: print(r.info.run_id)"
    )
    env = {**os.environ, "DVC_ROOT": str(migrated)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(d), key], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for d, key in ((2, "sweepA"), (3, "sweepA"), (4, "sweepA"), (2, "sweepB"))
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    exp = client.get_experiment_by_name("exp").experiment_id
    parents = {r.data.tags["vaebic.sweep"]: r for r in client.search_runs([exp], "tags.`vaebic.role` = 'sweep'")}
    assert set(parents) == {"sweepA", "sweepB"}  # one parent per sweep, even with concurrent first writers
    children = client.search_runs([exp], "tags.`vaebic.role` = 'model'")
    by_parent = {}
    for c in children:
        by_parent.setdefault(c.data.tags["mlflow.parentRunId"], []).append(c.info.run_name)
    assert sorted(by_parent[parents["sweepA"].info.run_id]) == ["d2-s0", "d3-s0", "d4-s0"]
    assert by_parent[parents["sweepB"].info.run_id] == ["d2-s0"]


def test_provenance_names_commit_stage_params_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    params = tmp_path / "params.yaml"
    params.write_text("a: 1\n")
    tags = tracking.provenance("train@2-0", params, "f" * 64)
    assert tags["dvc.stage"] == "train@2-0" and tags["data.fingerprint"] == "f" * 64
    assert tags["params.sha256"] == __import__("hashlib").sha256(b"a: 1\n").hexdigest()
    assert "git.commit" not in tags  # not a git repository: no commit to name
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"], cwd=tmp_path, check=True
    )
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert tracking.provenance("train@2-0", params, "f" * 64)["git.commit"] == head


def test_a_diverged_run_ends_failed_and_an_interrupted_one_killed_with_its_reason(migrated):
    import mlflow
    import torch

    from vaebic.fit.training import DivergedError, train_vae
    from vaebic.model.vae import VAE, VAEConfig

    model = VAE(VAEConfig(4, 2, hidden_sizes=[4]))
    with torch.no_grad():
        model.decoder[-1].weight.fill_(float("nan"))
    with pytest.raises(DivergedError):
        with tracking.model_run("exp", 2, 0, "k", {"dvc.stage": "train@2-0"}) as run:
            train_vae(model, torch.ones(8, 4), epochs=3, batch_size=4, lr=1e-3, seed=0)
    with pytest.raises(KeyboardInterrupt):
        with tracking.model_run("exp", 3, 0, "k", {"dvc.stage": "train@3-0"}) as run2:
            raise KeyboardInterrupt
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    diverged, interrupted = client.get_run(run.info.run_id), client.get_run(run2.info.run_id)
    assert diverged.info.status == "FAILED" and "training diverged" in diverged.data.tags["vaebic.failure"]
    assert interrupted.info.status == "KILLED" and interrupted.data.tags["vaebic.failure"] == "KeyboardInterrupt"


def test_champion_requirements_pin_installed_versions_without_local_labels(monkeypatch):
    import importlib.metadata

    installed = {"torch": "2.14.1+cu126", "numpy": "2.4.6"}  # a CUDA wheel's version, as pip reports it
    monkeypatch.setattr(importlib.metadata, "version", installed.__getitem__)
    assert tracking.champion_requirements() == ["torch==2.14.1", "numpy==2.4.6"]


# Ctrl-C at points spread over one metric write: a profile hook counts SQLAlchemy's function calls
# during tracking.log_metrics and sends SIGINT to this process at call n, as a Ctrl-C then would.
CTRL_C_IN_A_WRITE = """
import json, os, signal, sys, time
from vaebic import tracking

def ctrl_c_at(n, sent):
    count = [0]
    def hook(frame, event, arg):
        if event == "call" and "sqlalchemy" in frame.f_code.co_filename:
            count[0] += 1
            if count[0] == n:
                sent.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGINT)
    return hook

results = []
for n in range(1, 2000, 73):
    sent, stopped = [], None
    try:
        with tracking.model_run("exp", 2, 0, "sweepA", {"dvc.stage": "train@2-0"}) as run:
            sys.setprofile(ctrl_c_at(n, sent))
            try:
                tracking.log_metrics({"train_loss": 1.5}, step=1)
            finally:
                sys.setprofile(None)
    except KeyboardInterrupt:
        stopped = time.monotonic() - sent[0]
    if sent:
        results.append({"n": n, "run_id": run.info.run_id, "stopped_after_s": stopped})
print(json.dumps(results))
"""


def test_ctrl_c_inside_a_metric_write_stops_at_once_and_ends_the_run_killed(migrated):
    # Interrupted at some points of a SQLite write, MLflow lost the Ctrl-C (SQLAlchemy caught it while
    # returning the connection to its pool) or kept the store's write lock, so that ending the run as
    # KILLED waited for the process's own lock: MLflow's busy timeout, 20 s per statement (seen: a
    # Ctrl-C'd train stage idle for 40 s). Writes now hold Ctrl-C until they are done.
    env = {**os.environ, "DVC_ROOT": str(migrated)}
    proc = subprocess.run([sys.executable, "-c", CTRL_C_IN_A_WRITE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert len(results) >= 10, results  # Ctrl-C at 10 or more points of one write
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    for r in results:
        assert r["stopped_after_s"] is not None and r["stopped_after_s"] < 2, r  # not lost, and not stuck
        run = client.get_run(r["run_id"])
        assert run.info.status == "KILLED" and run.data.tags["vaebic.failure"] == "KeyboardInterrupt", r
        assert run.data.metrics["train_loss"] == 1.5, r  # the interrupted write finished, then Ctrl-C acted


@pytest.mark.parametrize("in_process", [False, True], ids=["a process of its own", "in-process (Windows)"])
def test_the_tracking_process_ends_runs_as_the_stage_would(migrated, in_process):
    """A train stage's runs, made through its tracking process: the same statuses and tags as
    tracking.model_run in-process (the tests above), the exception's own name in the tag."""
    import mlflow

    from vaebic.fit.training import DivergedError
    from vaebic.tracking_process import TrackingProcess

    ids = {}
    with TrackingProcess(in_process) as tracker:
        with tracker.model_run("exp", 2, 0, "k", {"dvc.stage": "train@2-0"}) as ids["done"]:
            tracker.call("log_params", {"latent_dim": 2, "hidden_sizes": [4]})
            tracker.call("log_epochs", [(1, {"train_loss": 3.0}, 1000), (2, {"train_loss": 2.0}, 2000)])
        with pytest.raises(DivergedError, match="nan"):
            with tracker.model_run("exp", 3, 0, "k", {"dvc.stage": "train@3-0"}) as ids["diverged"]:
                raise DivergedError("training diverged: the loss is nan")
        with pytest.raises(KeyboardInterrupt):
            with tracker.model_run("exp", 4, 0, "k", {"dvc.stage": "train@4-0"}) as ids["interrupted"]:
                raise KeyboardInterrupt
        assert "mlflow" in tracker.call("tracking_uri")
    assert in_process == (tracker.proc is None) and (in_process or tracker.proc.wait(1) == 0)
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    done, diverged, interrupted = (client.get_run(ids[k]) for k in ("done", "diverged", "interrupted"))
    assert done.info.status == "FINISHED" and done.data.params == {"latent_dim": "2", "hidden_sizes": "[4]"}
    assert [(m.step, m.value, m.timestamp) for m in client.get_metric_history(ids["done"], "train_loss")] == [
        (1, 3.0, 1000),
        (2, 2.0, 2000),
    ]
    assert diverged.info.status == "FAILED" and diverged.data.tags["vaebic.failure"] == "DivergedError: training diverged: the loss is nan"
    assert interrupted.info.status == "KILLED" and interrupted.data.tags["vaebic.failure"] == "KeyboardInterrupt"
    (parent,) = {r.data.tags["mlflow.parentRunId"] for r in (done, diverged, interrupted)}
    tags = client.get_run(parent).data.tags
    assert (tags["vaebic.role"], tags["vaebic.sweep"]) == ("sweep", "k")


def test_tracking_process_errors_come_back_as_one_line_or_with_the_traceback(store):
    from vaebic.tracking_process import TrackingError, TrackingProcess

    (store / "mlflow.db").write_bytes(b"not a database, some bytes of something else")
    with TrackingProcess() as tracker:
        with pytest.raises(
            VaebicError, match=r"mlflow.db is not a SQLite database \(a corrupt or half-copied file\?\): move it aside"
        ) as e:
            with tracker.model_run("exp", 2, 0, "k", {"dvc.stage": "train@2-0"}):
                pass
        assert "\n" not in str(e.value)
        # the tracking process's traceback goes with it, shown only where a traceback is (VAEBIC_DEBUG=1)
        shown = "".join(traceback.format_exception(e.value))
        assert "in the MLflow tracking process:\nTraceback" in shown and "in check_sqlite_store" in shown, shown
        with pytest.raises(TrackingError, match=r"(?s)in the MLflow tracking process:\nTraceback .*AttributeError: .*no_such_call"):
            tracker.call("no_such_call")
        assert tracker.call("sqlite_store") == store / "mlflow.db"  # it answers on after an error


STAGE_THEN_SIGNAL = """
import os, sys, time
from vaebic.tracking_process import TrackingProcess
with TrackingProcess() as tracker, tracker.model_run("exp", 2, 0, "k", {"dvc.stage": "train@2-0"}) as run_id:
    print(tracker.proc.pid, run_id, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGINT"])
def test_the_tracking_process_outlives_neither_its_stage_nor_a_ctrl_c(migrated, signal_name):
    """SIGKILL of the stage: the tracking process finds the pipe closed and ends, the run left
    RUNNING for the resumed stage to end as KILLED (link_resumed), as with MLflow in the stage
    itself. Ctrl-C at a terminal (SIGINT to the whole process group): the tracking process ignores
    it and the stage ends the run through it, as KILLED."""
    import signal

    import mlflow

    env = {**os.environ, "DVC_ROOT": str(migrated)}
    proc = subprocess.Popen(
        [sys.executable, "-c", STAGE_THEN_SIGNAL],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    tracker_pid, run_id = proc.stdout.readline().split()
    if signal_name == "SIGKILL":
        os.kill(proc.pid, signal.SIGKILL)  # the stage alone
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    for _ in range(100):  # the tracking process is gone within seconds
        if not Path(f"/proc/{tracker_pid}").exists() or "Z" in Path(f"/proc/{tracker_pid}/stat").read_text().split(")")[1][:3]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the tracking process {tracker_pid} is still running after its stage got {signal_name}")
    run = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri()).get_run(run_id)
    expected = {"SIGKILL": "RUNNING", "SIGINT": "KILLED"}[signal_name]
    assert run.info.status == expected, (run.info.status, stderr[-2000:])
