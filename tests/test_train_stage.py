"""The train and evaluate stages' wiring (vaebic.stages.train, vaebic.stages.evaluate) in-process,
without `dvc repro`: a tiny synthetic data set, one model, its MLflow run, its checkpoint."""

from pathlib import Path

import pytest
import yaml
from conftest import X86_ONLY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """params.yaml of a tiny sweep, prepared data, and an MLflow store of its own."""
    from vaebic.data import preparation
    from vaebic.files import atomic_folder

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(name="synthetic", synthetic_true_dim=2, synthetic_n=300, synthetic_image_size=8)
    p["sweep"].update(latent_dims=[2], seeds=[0])
    p["train"].update(epochs=2, batch_size=50, device="cpu", checkpoint_every=1)
    p["evaluate"].update(n_samples=2, k_samples=5, batch_size=100)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    with atomic_folder(tmp_path / "prepared") as tmp:
        preparation.prepare(p["data"], p["model"]["likelihood"], tmp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_STAGE", raising=False)
    return tmp_path


def model_runs(project):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name(yaml.safe_load((project / "params.yaml").read_text())["mlflow"]["experiment"])
    return client, client.search_runs([exp.experiment_id], "tags.`vaebic.role` = 'model'")


def test_train_then_evaluate_in_process(project):
    import json

    from vaebic.stages.evaluate import evaluate
    from vaebic.stages.train import train

    params, data, out, ckpt = str(project / "params.yaml"), str(project / "prepared"), project / "models/2-0", project / "c.pt"
    train(params, data, str(out), 2, 0, checkpoint_path=ckpt)
    assert {"weights.pt", "config.json", "history.json", "stopping.json", "run.json"} <= {f.name for f in out.iterdir()}
    stopping = json.loads((out / "stopping.json").read_text())
    assert stopping["epochs_run"] == 2 and stopping["stop_reason"] == "cap" and stopping["best_epoch"] in (1, 2)  # 2 epochs: the cap
    assert not ckpt.exists()  # saved every epoch, removed once the model is written
    assert json.loads((out / "config.json").read_text())["train"]["precision_why"]
    client, runs = model_runs(project)
    (run,) = runs
    assert run.info.run_name == "d2-s0" and run.info.status == "FINISHED" and run.data.tags["dvc.stage"] == "train@2-0"
    assert (
        run.data.params["latent_dim"] == "2" and run.data.params["train.precision"] == "float32" and "train.device" not in run.data.params
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_iwae")] == [1, 2]  # the validation estimate, per epoch
    assert run.data.metrics["epochs_run"] == 2 and run.data.metrics["best_epoch"] == stopping["best_epoch"]
    assert run.data.tags["stop_reason"] == "cap" and run.data.params["n_validation"] == "24"

    record, examples = evaluate(params, data, str(out), 2, 0)
    assert record["latent_dim"] == 2 and record["training"]["epochs_run"] == 2 and record["training"]["stop_reason"] == "cap"
    # 300 examples: 60 test, 24 validation (not evaluated: they decided when to stop), 216 fitted on
    assert record["train"]["n"] == 216 and record["test"]["n"] == 60 and record["test"]["k_samples"] == 5
    assert {k: len(v) for k, v in examples.items()} == {"elbo_train": 216, "iwae_train": 216, "elbo_test": 60, "iwae_test": 60}


@X86_ONLY
def test_train_and_evaluate_processes_flush_subnormals_in_every_thread(project):
    """Each stage sets the flag before its first parallel torch operation (reading the data), so
    all of torch's threads have it (see vaebic.device.flush_subnormals_everywhere): otherwise the
    other threads' share of Adam's steps ran about 3x slower once its moments grew tiny."""
    import os
    import subprocess
    import sys

    code = """
import sys
from vaebic import device
from vaebic.stages import evaluate, train
stage, params, data, model = sys.argv[1:]
(train.train if stage == "train" else evaluate.evaluate)(params, data, model, 2, 0)
import torch
print(torch.get_num_threads(), device.every_thread_flushes())
"""
    params, data, out = str(project / "params.yaml"), str(project / "prepared"), str(project / "models/2-0")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}  # two threads also under pytest -n
    for stage in ("train", "evaluate"):  # evaluate reads the model train wrote
        done = subprocess.run([sys.executable, "-c", code, stage, params, data, out], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[-2:] == ["2", "True"], (stage, done.stdout)


def test_the_train_stage_process_leaves_mlflow_to_its_tracking_process(project):
    """MLflow (about 1.6 s to import with its SQLite store) loads in the tracking process, on the
    other core while the stage imports torch (vaebic.tracking_process); the run is recorded all the same."""
    import subprocess
    import sys

    code = "import sys; from vaebic.stages import train; train.train(*sys.argv[1:4], 2, 0); print('mlflow' in sys.modules, 'torch' in sys.modules)"
    params, data, out = str(project / "params.yaml"), str(project / "prepared"), str(project / "models/2-0")
    done = subprocess.run([sys.executable, "-c", code, params, data, out], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["False", "True"], done.stdout
    client, (run,) = model_runs(project)
    assert run.info.status == "FINISHED" and [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]


def test_ctrl_c_names_the_checkpoint_it_keeps_and_ends_the_run_killed(project, monkeypatch):
    from vaebic.fit import training
    from vaebic.stages.train import train

    def interrupted(model, x, *, checkpoint, **kw):
        checkpoint({"epoch": 1, "history": []})
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train_vae", interrupted)
    ckpt = project / "c.pt"
    with pytest.raises(KeyboardInterrupt, match=rf"the checkpoint of epoch 1 \(of at most 2\) is kept in {ckpt}; run the same `dvc repro`"):
        train(str(project / "params.yaml"), str(project / "prepared"), str(project / "models/2-0"), 2, 0, checkpoint_path=ckpt)
    assert ckpt.exists() and not (project / "models/2-0").exists()
    _, (run,) = model_runs(project)
    assert run.info.status == "KILLED"


def test_per_epoch_metrics_reach_mlflow_before_every_checkpoint_and_on_ctrl_c(project, monkeypatch):
    """Written in batches (EpochLog), never later than the checkpoint that holds them: a run
    SIGKILLed after a checkpoint has all of that checkpoint's epochs; Ctrl-C writes the rest."""
    from vaebic.fit import training
    from vaebic.stages import train

    def steps():  # what the store holds: the run is the tracking process's, not this one's
        client, (run,) = model_runs(project)
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")]

    seen = {}

    def two_epochs_a_checkpoint_then_ctrl_c(model, x, *, on_epoch, checkpoint, **kw):
        on_epoch(1, {"epoch": 1, "loss": 3.0, "lr": 0.1})
        on_epoch(2, {"epoch": 2, "loss": 2.0, "lr": 0.1})
        seen["before the checkpoint"] = steps()
        checkpoint({"epoch": 2, "history": []})
        seen["after it"] = steps()
        on_epoch(3, {"epoch": 3, "loss": 1.0, "lr": 0.05})
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "METRICS_EVERY_S", 3600.0)  # no write on time: only the checkpoint and Ctrl-C write
    monkeypatch.setattr(training, "train_vae", two_epochs_a_checkpoint_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt, match="the checkpoint of epoch 2"):
        train.train(str(project / "params.yaml"), str(project / "prepared"), str(project / "models/2-0"), 2, 0, project / "c.pt")
    assert seen == {"before the checkpoint": [], "after it": [(1, 3.0), (2, 2.0)]}
    client, (run,) = model_runs(project)
    assert run.info.status == "KILLED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "lr")] == [0.1, 0.1, 0.05]


def test_the_epoch_log_writes_once_its_interval_has_passed_with_each_epochs_time(project):
    import time

    import mlflow

    from vaebic import tracking
    from vaebic.stages.train import EpochLog

    tracking.setup("epochs")
    with mlflow.start_run() as run:
        client = mlflow.MlflowClient()

        def history():
            return [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, "train_loss")]

        before = int(time.time() * 1000)
        EpochLog(tracking.log_epochs, every_s=0.0)(1, {"loss": 3.0, "recon": 2.5})  # the interval has passed: written at once
        after = int(time.time() * 1000)
        (first,) = history()
        assert first[:2] == (1, 3.0) and before <= first[2] <= after
        later = EpochLog(tracking.log_epochs, every_s=3600.0)
        later(2, {"loss": 2.0})
        time.sleep(0.05)
        later(3, {"loss": 1.0})
        assert len(history()) == 1  # held
        later.flush()
        (_, two, three) = history()
        assert two[:2] == (2, 2.0) and three[:2] == (3, 1.0) and three[2] >= two[2] + 50  # each epoch's own time
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_recon")] == [1]


def test_out_of_memory_advice_names_the_parameters():
    from vaebic.stages import evaluate, train

    assert train.training_oom_advice(128) == (
        "the batch size is train.batch_size=128: lower it (e.g. to 64), or use smaller model.hidden_sizes"
    )
    assert evaluate.estimate_oom_advice(2.0, 1000) == (
        "evaluation works in blocks of 2 MiB (evaluate.max_chunk_mb) over evaluate.batch_size=1000 examples: lower either"
    )
