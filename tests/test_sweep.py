"""Sweeps that spread, on real engines: DVC's run-cache and a local-directory DVC remote, a real
Dask cluster (in-process workers, and `dask scheduler` + two `dask worker` processes standing in
for two machines), and a real `mlflow server` on 127.0.0.1.

Every sweep is compared with a sequential `dvc repro` of the same configuration: the same
stages in dvc.lock, in the same order, `dvc status` clean, the metrics within float rounding (the
workers use fewer CPU threads, which changes the order of float sums), and the same picks.
"""

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import free_port
from pipeline_project import TINY, champion, clean_env, dvc, edit_params, make_project, mlflow_client, repro, tiny

pytestmark = pytest.mark.slow


def sweep(project: Path, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vaebic.sweep", *args], cwd=project, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )


def results(project: Path) -> dict:
    """What a run leaves: the lock's stages (in order) with their commands, deps and params; the
    metrics; the picks."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    names = [f"{d}-{s}" for d in yaml.safe_load((project / "params.yaml").read_text())["sweep"]["latent_dims"] for s in (0,)]
    return {
        "stages": list(lock),
        "recipe": {
            name: (
                e["cmd"],
                [(d["path"], d["md5"]) for d in e.get("deps", []) if not d["path"].startswith(("models", "metrics"))],
                e.get("params"),
            )
            for name, e in lock.items()
        },
        "metrics": {n: json.loads((project / f"metrics/{n}.json").read_text()) for n in names},
        "picks": json.loads((project / "reports/selection.json").read_text())["selected_by"],
    }


def assert_same_as_reference(project: Path, reference: dict, out: str = ""):
    got = results(project)
    assert got["stages"] == reference["stages"]  # dvc.lock in the order a sequential run writes it
    assert got["recipe"] == reference["recipe"]
    assert got["picks"] == reference["picks"]
    for name, m in reference["metrics"].items():
        for split in ("train", "test"):
            for key in ("iwae_nats", "elbo_nats", "kl_nats"):
                assert got["metrics"][name][split][key] == pytest.approx(m[split][key], rel=1e-3, abs=1e-3), (name, split, key)
    status = dvc(project, "status")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    logs = out + "".join(f.read_text() for f in (project / ".dvc/tmp/sweep").glob("*.log"))
    assert "database is locked" not in logs


@pytest.fixture
def reference(finished_project) -> dict:
    """What a sequential `dvc repro` of the tiny project leaves: the run's finished project."""
    return results(finished_project)


def test_a_sweep_in_one_workspace_matches_a_sequential_run(reference, new_project, tmp_path):
    project = new_project(tmp_path, TINY)
    proc = sweep(project, "--jobs", "2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 models, 2 at a time, on 2 local workers, 1 CPU threads each" in out
    assert_same_as_reference(project, reference, out)
    client = mlflow_client(project)
    runs = client.search_runs([client.get_experiment_by_name("vaebic").experiment_id])
    children = {r.info.run_name: r for r in runs if r.data.tags.get("vaebic.role") == "model"}
    assert set(children) == {"d2-s0", "d4-s0"} and {r.info.status for r in children.values()} == {"FINISHED"}
    assert len({r.data.tags["mlflow.parentRunId"] for r in children.values()}) == 1

    # a failing stage fails the sweep once the running one is done; a second run resumes (no new
    # Model Registry versions on the way: not what this part is about, and not a DVC param)
    edit_params(project, {"sweep": {"latent_dims": [2, 3, 4, 5], "seeds": [0]}, "mlflow": {"registered_model": None}})
    (project / "checkpoints").mkdir(exist_ok=True)
    (project / "checkpoints/5-0.pt").write_bytes(b"not a checkpoint")
    proc = sweep(project, "--jobs", "2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: train@5-0 failed: checkpoint checkpoints/5-0.pt "), out
    assert (project / "models/3-0/weights.pt").exists()  # the other model, running meanwhile, finished
    (project / "checkpoints/5-0.pt").unlink()
    proc = sweep(project, "--jobs", "2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "train and evaluate 1 models" in out  # 2, 3 and 4 are up to date
    assert dvc(project, "status").stdout.strip().endswith("up to date.")


def test_ctrl_c_stops_every_task_and_a_rerun_resumes_from_the_checkpoints(new_project, tmp_path):
    # a cap no model reaches before the Ctrl-C; no Model Registry versions (not what this test is about)
    project = new_project(tmp_path, tiny(train={"epochs": 200, "checkpoint_every": 1}, mlflow={"registered_model": None}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaebic.sweep", "--jobs", "2"],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not all((project / f"checkpoints/{d}-0.pt").exists() for d in (2, 4)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, to the sweep only: it stops the tasks itself
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, out
    assert "interrupted: stopped by Ctrl-C; every task was stopped; run the same command again to resume" in out
    assert "Traceback" not in out
    leftover = subprocess.run(["pgrep", "-f", f"stages/train.py.*{project}|dvc.*repro.*train@"], capture_output=True, text=True)
    assert not any(
        str(project) in Path(f"/proc/{pid}/cwd").resolve().as_posix() for pid in leftover.stdout.split() if Path(f"/proc/{pid}").exists()
    )
    kept = {d: torch.load(project / f"checkpoints/{d}-0.pt", weights_only=True)["epoch"] for d in (2, 4)}  # both kept
    # the rerun resumes both, and a cap lowered meanwhile (train.epochs is not part of a checkpoint's
    # settings) ends them within a few epochs (or on a plateau first), not at 200
    cap = max(kept.values()) + 2
    edit_params(project, {"train": {"epochs": cap}})
    proc = sweep(project, "--jobs", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for d, epoch in kept.items():
        log = (project / f".dvc/tmp/sweep/{d}-0.log").read_text()
        assert f"resuming at epoch {epoch + 1} of at most {cap}" in log, log
        assert epoch < len(json.loads((project / f"models/{d}-0/history.json").read_text())) <= cap  # the new cap held
    assert dvc(project, "status").stdout.strip().endswith("up to date.")


def start(cmd, log_path, env):
    return subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env)


def wait_for_port(port, proc, log_path, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert proc.poll() is None, Path(log_path).read_text()
            time.sleep(0.3)
    pytest.fail(f"nothing listens on {port}: " + Path(log_path).read_text())


def test_a_sweep_on_a_cluster_hands_results_back_through_the_dvc_remote(reference, mlflow_server, tmp_path):
    """Two `dask worker` processes, each task in its own clone, the results handed back through a
    local-directory DVC remote and its run-cache, the runs in a real tracking server."""
    import mlflow

    project = make_project(tmp_path / "project", TINY)
    assert dvc(project, "remote", "add", "-d", "shared", str(tmp_path / "remote")).returncode == 0
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "the sweep"], cwd=project, check=True)
    env = clean_env()
    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    scheduler = start([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], tmp_path / "scheduler.log", env)
    workers = [
        start(
            [dask, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-dashboard", "--name", str(i)],
            tmp_path / f"worker{i}.log",
            env,
        )
        for i in range(2)
    ]
    try:
        wait_for_port(port, scheduler, tmp_path / "scheduler.log")
        proc = sweep(
            project,
            "--scheduler",
            f"tcp://127.0.0.1:{port}",
            "--clone-dir",
            str(tmp_path / "clones"),
            env=clean_env(MLFLOW_TRACKING_URI=mlflow_server),
        )
    finally:
        for p in (*workers, scheduler):
            p.terminate()
            p.wait(timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out + "".join((tmp_path / f"worker{i}.log").read_text() for i in range(2))
    assert "on the Dask cluster at tcp://127.0.0.1" in out
    assert out.count("is cached - skipping run, checking out outputs") == 4  # train and evaluate of 2 models, from the run-cache
    assert "Running stage 'train@" not in out  # nothing trained here
    assert_same_as_reference(project, reference, out)
    assert not (project / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("vaebic").experiment_id])
    children = {r.info.run_name: r for r in runs if r.data.tags.get("vaebic.role") == "model"}
    assert set(children) == {"d2-s0", "d4-s0"} and {r.info.status for r in children.values()} == {"FINISHED"}
    assert "bic" in children["d2-s0"].data.metrics  # the report, run here, found the workers' runs
    for d in (2, 4):
        assert json.loads((project / f"models/{d}-0/run.json").read_text())["mlflow_run_id"] == children[f"d{d}-s0"].info.run_id
    # what the server holds: the workers' per-epoch metrics, the report's figures and pictures, the champion
    parent = next(r for r in runs if r.data.tags["vaebic.role"] == "sweep")
    child = children["d2-s0"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")] == [1, 2]
    assert "iwae_test" in child.data.metrics
    best = json.loads((project / "reports/selection.json").read_text())["best_latent_dim"]
    assert {"reconstructions.png", "samples.png"} <= {a.path for a in client.list_artifacts(children[f"d{best}-s0"].info.run_id)}
    assert {"bic_curve.png", "report.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    local = client.download_artifacts(parent.info.run_id, "report.md", str(tmp_path))
    assert open(local).read() == (project / "reports/report.md").read_text()
    version, served = champion(mlflow_server)
    assert version.run_id == children[f"d{best}-s0"].info.run_id
    mu, logvar, decoded = served(torch.rand(4, 784), torch.randn(4, best))
    assert mu.shape == (4, best) and decoded.shape == (4, 784)


def test_another_clone_restores_the_results_from_a_dvc_remote(finished_project, tmp_path):
    """Machine A ran the pipeline and pushed outputs and run-cache; machine B, a clone at the same
    commit without A's dvc.lock, fetches the run-cache and runs none of A's stages."""
    reference = finished_project
    remote = tmp_path / "remote"
    assert dvc(reference, "remote", "add", "-d", "shared", str(remote)).returncode == 0
    assert dvc(reference, "push", "--run-cache").returncode == 0
    subprocess.run(["git", "add", "-A"], cwd=reference, check=True)
    subprocess.run(["git", "rm", "-q", "--cached", "dvc.lock"], cwd=reference, check=True)  # B has only the code, params and config
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "code"], cwd=reference, check=True)
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(reference), str(other)], check=True)
    assert not (other / "dvc.lock").exists()
    assert dvc(other, "fetch", "--run-cache").returncode == 0
    proc = dvc(other, "repro", "--pull")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    ran = re.findall(r"Running stage '([^']+)'", out)
    assert set(ran) <= {"validate", "select", "report"}, ran  # the cheap ones whose outputs live in git
    assert out.count("is cached - skipping run, checking out outputs") == 5  # prepare, 2 x train, 2 x evaluate
    for n in ("2-0", "4-0"):
        assert (other / f"metrics/{n}.json").read_bytes() == (reference / f"metrics/{n}.json").read_bytes()
        assert (other / f"models/{n}/weights.pt").read_bytes() == (reference / f"models/{n}/weights.pt").read_bytes()


def test_reverting_a_parameter_restores_models_metrics_and_mlflow_links(finished_project):
    reference = finished_project
    picks = results(reference)["picks"]
    first = {d: json.loads((reference / f"models/{d}-0/run.json").read_text())["mlflow_run_id"] for d in (2, 4)}
    # no new Model Registry versions on the way (not what this test is about): the report reruns either way
    edit_params(reference, {"train": {"lr": 0.002}, "mlflow": {"registered_model": None}})
    _, _, ran = repro(reference)
    assert {"train@2-0", "train@4-0", "evaluate@2-0", "evaluate@4-0"} <= set(ran)
    edit_params(reference, {"train": {"lr": 0.001}})
    _, out, ran = repro(reference)
    assert not [s for s in ran if s.startswith(("train@", "evaluate@"))], ran  # nothing trained or evaluated again
    assert out.count("is cached - skipping run, checking out outputs") == 4
    client = mlflow_client(reference)
    for d, run_id in first.items():
        assert json.loads((reference / f"models/{d}-0/run.json").read_text())["mlflow_run_id"] == run_id
        assert client.get_run(run_id).info.status == "FINISHED"
    assert json.loads((reference / "reports/selection.json").read_text())["selected_by"] == picks
