"""MLflow tracking against a real SQLite store."""

import os
import socket
import subprocess
import sys
import time

import pytest

from vaebic import tracking
from vaebic.errors import VaebicError


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path


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
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    ids = {r[0].strip().splitlines()[-1] for r in results}
    assert len(ids) == 1
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    assert [e.name for e in client.search_experiments() if e.name == "race"] == ["race"]
    assert client.get_experiment(ids.pop()).artifact_location == (store / "mlartifacts").as_uri()


def test_a_failing_block_ends_its_run_as_failed(store):
    with pytest.raises(RuntimeError):
        with tracking.model_run("exp", 3, 1, "train@3-1") as run:
            tracking.log_metrics({"train_loss": 1.0}, step=1)
            raise RuntimeError("boom")
    import mlflow

    r = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri()).get_run(run.info.run_id)
    assert r.info.status == "FAILED"
    assert r.info.run_name == "d3-s1" and r.data.tags["dvc.stage"] == "train@3-1"


def test_evaluate_reopens_the_training_run_or_starts_a_new_one(store):
    with tracking.model_run("exp", 2, 0, "train@2-0") as run:
        pass
    with tracking.model_run("exp", 2, 0, "evaluate@2-0", run_id=run.info.run_id) as again:
        tracking.log_metrics({"elbo_test": -100.0})
    assert again.info.run_id == run.info.run_id
    with tracking.model_run("exp", 2, 0, "evaluate@2-0", run_id="0" * 32) as fresh:
        pass
    assert fresh.info.run_id != run.info.run_id


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


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on a free 127.0.0.1 port, stopped after the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "server-artifacts")]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start: " + (tmp_path / "server.log").read_text())
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_runs_metrics_and_artifacts_reach_a_real_tracking_server(mlflow_server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    with tracking.model_run("remote", 4, 0, "train@4-0") as run:
        tracking.log_metrics({"train_loss": 9.0}, step=1)
        tracking.log_artifact(artifact)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    r = client.get_run(run.info.run_id)
    assert r.info.status == "FINISHED" and r.data.metrics["train_loss"] == 9.0
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    assert (tmp_path / "server-artifacts").exists()
