"""The grey-level likelihoods through the real pipeline: data kept as grey levels, numbers named."""

import json

import numpy as np
import pandas as pd
import pytest
from pipeline_project import mlflow_client, repro, tiny

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "likelihood,sigma,words",
    [
        ("gaussian", "optimal", "Gaussian N(x; mean(z), sigma^2 I) on grey levels in [0, 1], constants included; sigma calibrated"),
        ("continuous_bernoulli", "learned", "continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) on grey levels"),
    ],
)
def test_grey_level_likelihood_runs_end_to_end(new_project, tmp_path, likelihood, sigma, words):
    project = new_project(
        tmp_path,
        tiny(
            data={"max_examples": 400},
            model={"likelihood": likelihood, "gaussian_sigma": sigma},
            sweep={"latent_dims": [2]},  # one model: the likelihood is what is tested, the pick elsewhere
            evaluate={"k_samples": 10},
            report={"n_samples": 8, "dpi": 40},
            mlflow={"registered_model": None},  # registering the pick: tests/test_pipeline.py
        ),
    )
    repro(project)
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    assert meta["likelihood"] == likelihood and not meta["binarized"]
    train_x = np.load(project / "data/prepared/train_x.npy")
    assert train_x.dtype == np.float32 and len(np.unique(train_x)) > 2
    table = pd.read_csv(project / "reports/bic.csv")
    assert np.isfinite(table[["bic", "aic", "iwae_train", "elbo_train"]].to_numpy()).all()
    assert (table.iwae_train >= table.elbo_train - 3 * table.iwae_se_train).all()
    if likelihood == "gaussian":
        # the calibrated sigma is one more generative parameter: 2 -> 32 -> 784 decoder plus 1
        assert table.set_index("latent_dim").n_params[2] == (2 * 32 + 32) + (32 * 784 + 784) + 1
        # each model's final sigma, stored with it, is in the table: the RMS error of grey levels, in (0, 1)
        assert ((table.sigma > 0.01) & (table.sigma < 0.5)).all()
        from vaebic.model.vae import load_model

        assert load_model(project / "models/2-0").sigma() == pytest.approx(table.set_index("latent_dim").sigma[2], rel=1e-6)
        assert "- `sigma`: the Gaussian decoder's final pixel sigma" in (project / "reports/report.md").read_text()
    else:
        assert table.sigma.isna().all()
    assert json.loads((project / "reports/selection_notes.json").read_text())["likelihood"] == likelihood
    assert words in (project / "reports/report.md").read_text()
    assert mlflow_client(project).search_registered_models() == []  # mlflow.registered_model: null
