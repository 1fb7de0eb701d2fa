"""Interruption and resume, end to end: `dvc repro` really interrupted (Ctrl-C to its process
group, then SIGKILL inside the early-stopping patience window), run again, and ending with the
weights and metrics of a run that was never interrupted; the MLflow runs tell the story."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from pipeline_project import clean_env, edit_params, mlflow_client, repro

pytestmark = pytest.mark.slow

EPOCHS = 300  # the cap: this model stops on its validation plateau after about 50 epochs
CONFIG = {
    "data": {"max_examples": 1500},
    "model": {"hidden_sizes": [128]},
    "sweep": {"latent_dims": [2], "seeds": [0]},
    "train": {"epochs": EPOCHS, "batch_size": 32, "lr": 0.001, "patience": 5, "lr_patience": 2, "checkpoint_every": 1},
    "evaluate": {"n_samples": 1, "k_samples": 5},
    "report": {"n_samples": 4, "dpi": 40},
}
CKPT = Path("checkpoints/2-0.pt")


def start_repro(project: Path) -> subprocess.Popen:
    """`dvc repro train@2-0` in its own process group, as a terminal would run it."""
    return subprocess.Popen(
        ["dvc", "repro", "train@2-0"],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def checkpoint_state(project: Path) -> tuple[int, int]:
    """(epoch, epochs without improvement) of the checkpoint; (0, 0) when there is none yet."""
    try:
        state = torch.load(project / CKPT, weights_only=True)
        return state["epoch"], state["stopping"]["wait"]
    except Exception:  # not there yet, or being replaced
        return 0, 0


def checkpoint_epoch(project: Path) -> int:
    return checkpoint_state(project)[0]


def interrupt_after(project: Path, proc: subprocess.Popen, epoch: int, sig: int, waiting: bool = False) -> str:
    """Send sig to the whole process group (dvc and the stage) once a checkpoint at `epoch` or
    later exists (with waiting: one saved inside the patience window, after an epoch without
    improvement); return everything the processes printed."""
    deadline = time.monotonic() + 600

    def ready():
        e, wait = checkpoint_state(project)
        return e >= epoch and (wait >= 1 or not waiting)

    while not ready():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    return out


@pytest.fixture(scope="module")
def uninterrupted(new_project, tmp_path_factory):
    """The model trained and evaluated without interruption (the tests compare no report)."""
    project = new_project(tmp_path_factory.mktemp("straight"), CONFIG)
    repro(project, "evaluate@2-0")
    assert not (project / CKPT).exists()  # removed once the model is written
    return project


def test_killed_training_resumes_to_the_same_weights_and_mlflow_tells_the_story(uninterrupted, new_project, tmp_path):
    project = new_project(tmp_path, CONFIG)

    # 1. Ctrl-C: the stage stops cleanly, keeps its checkpoint and says how to resume.
    out = interrupt_after(project, start_repro(project), 4, signal.SIGINT)
    first = checkpoint_epoch(project)
    assert 4 <= first < EPOCHS, out
    assert (
        f"interrupted: stopped by Ctrl-C; the checkpoint of epoch {first} (of at most {EPOCHS}) is kept in checkpoints/2-0.pt; "
        "run the same `dvc repro` command again to resume from it" in out
    )
    assert "Traceback" not in out
    assert not (project / "models/2-0").exists()

    # 2. Run again, then SIGKILL inside the patience window (the best epoch is behind, the stop not yet
    # reached): no chance to clean up at all, and the best weights live only in the checkpoint.
    proc = start_repro(project)
    out = interrupt_after(project, proc, first + 4, signal.SIGKILL, waiting=True)
    assert proc.returncode == -signal.SIGKILL
    assert f"resuming at epoch {first + 1} of at most {EPOCHS}" in out
    second, wait = checkpoint_state(project)
    assert first + 4 <= second < EPOCHS and wait >= 1

    # 3. Run again to the end (through its evaluation): the same weights, bit for bit, and the same
    # per-epoch metrics.
    proc, out, ran = repro(project, "evaluate@2-0")
    assert "train@2-0" in ran and f"resuming at epoch {second + 1} of at most {EPOCHS}" in out
    assert not (project / CKPT).exists()
    got = torch.load(project / "models/2-0/weights.pt", weights_only=True)
    want = torch.load(uninterrupted / "models/2-0/weights.pt", weights_only=True)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    history = json.loads((project / "models/2-0/history.json").read_text())
    assert history == json.loads((uninterrupted / "models/2-0/history.json").read_text())
    stopping = json.loads((project / "models/2-0/stopping.json").read_text())
    assert stopping == json.loads((uninterrupted / "models/2-0/stopping.json").read_text())
    assert stopping["stop_reason"] == "plateau" and len(history) == stopping["epochs_run"] < EPOCHS
    assert (
        json.loads((project / "metrics/2-0.json").read_text())["test"]
        == json.loads((uninterrupted / "metrics/2-0.json").read_text())["test"]
    )

    # The three MLflow runs: Ctrl-C'd (KILLED), SIGKILLed (KILLED by the next start), and the one that finished, linked.
    client = mlflow_client(project)
    runs = sorted(
        client.search_runs([client.get_experiment_by_name("vaebic").experiment_id], "tags.`vaebic.role` = 'model'"),
        key=lambda r: r.info.start_time,
    )
    assert [r.info.status for r in runs] == ["KILLED", "KILLED", "FINISHED"]
    assert {r.info.run_name for r in runs} == {"d2-s0"}
    one, two, three = runs
    assert one.data.tags["vaebic.failure"] == "KeyboardInterrupt"
    assert "killed" in two.data.tags["vaebic.failure"]
    assert one.data.tags["vaebic.resumed_by"] == two.info.run_id and two.data.tags["vaebic.resumed_from"] == one.info.run_id
    assert two.data.tags["vaebic.resumed_by"] == three.info.run_id and three.data.tags["vaebic.resumed_from"] == two.info.run_id
    assert three.data.tags["vaebic.resumed_at_epoch"] == str(second)
    assert f"epoch {second} written by run {two.info.run_id}" in three.data.tags["mlflow.note.content"]
    # each checkpoint's epochs reach MLflow before it is written: the SIGKILLed run's curve reaches its checkpoint
    killed = sorted(m.step for m in client.get_metric_history(two.info.run_id, "train_loss"))
    assert killed == list(range(1, len(killed) + 1)) and len(killed) >= second
    curve = client.get_metric_history(three.info.run_id, "train_loss")
    assert [m.step for m in sorted(curve, key=lambda m: m.step)] == list(range(1, len(history) + 1))
    assert [m.value for m in sorted(curve, key=lambda m: m.step)] == pytest.approx([h["loss"] for h in history])


def test_a_checkpoint_from_other_settings_is_not_resumed(uninterrupted, new_project, tmp_path):
    """Interrupted, then the learning rate changed: training starts over, and ends as a fresh run would."""
    project = new_project(tmp_path, {**CONFIG, "train": {**CONFIG["train"], "lr": 0.002}})
    out = interrupt_after(project, start_repro(project), 2, signal.SIGKILL)
    assert checkpoint_epoch(project) >= 2
    edit_params(project, {"train": {"lr": CONFIG["train"]["lr"]}})
    proc = start_repro(project)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "written for another configuration" in out and "resuming" not in out
    got = torch.load(project / "models/2-0/weights.pt", weights_only=True)
    want = torch.load(uninterrupted / "models/2-0/weights.pt", weights_only=True)
    assert all(torch.equal(got[k], want[k]) for k in want)
