"""The grey-level likelihoods through the real pipeline: data kept as grey levels, numbers named."""

import json

import numpy as np
import pandas as pd
import pytest
from pipeline_project import make_project, repro

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("likelihood,sigma,words", [
    ("gaussian", "learned", "Gaussian N(x; mean(z), sigma^2 I) on grey levels in [0, 1], constants included; sigma learned"),
    ("continuous_bernoulli", "learned", "continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) on grey levels"),
])
def test_grey_level_likelihood_runs_end_to_end(tmp_path, likelihood, sigma, words):
    project = make_project(tmp_path, {
        "data": {"max_examples": 400},
        "model": {"likelihood": likelihood, "gaussian_sigma": sigma, "hidden_sizes": [32]},
        "sweep": {"latent_dims": [2, 3], "seeds": [0]},
        "train": {"epochs": 2},
        "evaluate": {"n_samples": 2, "k_samples": 10},
        "report": {"n_samples": 8, "dpi": 40},
    })
    repro(project)
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    assert meta["likelihood"] == likelihood and not meta["binarized"]
    train_x = np.load(project / "data/prepared/train_x.npy")
    assert train_x.dtype == np.float32 and len(np.unique(train_x)) > 2
    table = pd.read_csv(project / "reports/bic.csv")
    assert np.isfinite(table[["bic", "aic", "iwae_train", "elbo_train"]].to_numpy()).all()
    assert (table.iwae_train >= table.elbo_train - 3 * table.iwae_se_train).all()
    if sigma == "learned" and likelihood == "gaussian":
        # the learned sigma is one more generative parameter: 2 -> 32 -> 784 decoder plus 1
        assert table.set_index("latent_dim").n_params[2] == (2 * 32 + 32) + (32 * 784 + 784) + 1
    assert json.loads((project / "reports/selection.json").read_text())["likelihood"] == likelihood
    assert words in (project / "reports/report.md").read_text()
