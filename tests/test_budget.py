"""The answer does not move with the training budget, end to end (real `dvc repro`).

Each model trains until its validation estimate stops improving; `train.epochs` is only the cap.
Raising a cap that no model reached re-runs training (the parameter changed) and gives the same
weights, bit for bit, and the same picks. (A cap that is reached is flagged: tests/test_pipeline.py,
whose models train 2 epochs.)
"""

import hashlib
import json

import pandas as pd
import pytest
from pipeline_project import edit_params, repro, tiny

pytestmark = pytest.mark.slow

DIMS = [1, 2]  # two models: a pick to keep; each more costs two stage processes per run
# TINY's data and model, each trained to its plateau
CONFIG = tiny(
    sweep={"latent_dims": DIMS},
    train={"epochs": 200, "batch_size": 64, "lr": 0.003, "patience": 5, "lr_patience": 3},
    evaluate={"n_samples": 1, "k_samples": 10},
    select={"bootstrap": 100},
    report={"n_samples": 4, "dpi": 40},
    mlflow={"registered_model": None},  # no Model Registry versions: not what this test is about
)


def model_files(project) -> dict:
    return {
        f"{d}-0/{name}": hashlib.sha256((project / "models" / f"{d}-0" / name).read_bytes()).hexdigest()
        for d in DIMS
        for name in ("weights.pt", "history.json")
    }


def test_raising_a_cap_no_model_reached_changes_no_weight_and_no_pick(new_project, tmp_path):
    project = new_project(tmp_path, CONFIG)
    repro(project)
    table = pd.read_csv(project / "reports/bic.csv")
    assert (table.stop_reason == "plateau").all() and table.epochs_run.max() < 200, table[["latent_dim", "best_epoch", "epochs_run"]]
    assert (table.epochs_run == table.best_epoch + 5).all()  # patience 5, then the best epoch's weights
    before = model_files(project), (project / "reports/bic.csv").read_text(), (project / "reports/selection.json").read_text()

    edit_params(project, {"train": {"epochs": 400}})
    _, out, ran = repro(project)
    assert {f"train@{d}-0" for d in DIMS} <= set(ran)  # the cap is a parameter of the train stages: they ran again
    after = model_files(project), (project / "reports/bic.csv").read_text(), (project / "reports/selection.json").read_text()
    assert after == before  # the same weights and histories, the same table, the same picks and settling epochs
    sel = json.loads(after[2])
    assert sel["models_at_cap"] == 0 and sel["pick_stable_since_epoch"]["bic"] <= sel["epochs_run_max"]
    assert "every model stopped on its validation plateau" in (project / "reports/report.md").read_text()
