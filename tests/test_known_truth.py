"""Selection finds the truth when the truth is known: real `dvc repro` on the synthetic data set.

The data come from a random ReLU decoder out of a 3-dimensional latent space (inside the VAE's
model family). BIC must choose 3 (or a neighbour on the swept grid), and models with more latent
units than needed must leave the extra ones inactive.
"""

import json

import pandas as pd
import pytest
from pipeline_project import make_project, repro

pytestmark = pytest.mark.slow

TRUE_DIM = 3
GRID = [1, 2, 3, 4, 6, 8]
KNOWN_TRUTH = {
    "data": {"name": "synthetic", "synthetic_true_dim": TRUE_DIM, "synthetic_n": 3000, "synthetic_image_size": 12, "synthetic_seed": 0},
    "model": {"hidden_sizes": [64]},
    "sweep": {"latent_dims": GRID, "seeds": [0]},
    "train": {"epochs": 100, "batch_size": 128, "lr": 0.006},
    "evaluate": {"n_samples": 2, "k_samples": 50},
    "report": {"n_samples": 16, "dpi": 50},
}


def test_bic_recovers_the_true_latent_dimension(tmp_path):
    project = make_project(tmp_path, KNOWN_TRUTH)
    repro(project)
    sel = json.loads((project / "reports/selection.json").read_text())
    i = GRID.index(TRUE_DIM)
    assert sel["best_latent_dim"] in GRID[i - 1 : i + 2], sel
    assert sel["best_latent_dim"] == TRUE_DIM, sel  # exact on this configuration; the line above is the promise

    table = pd.read_csv(project / "reports/bic.csv")
    bics = table.set_index("latent_dim").bic
    assert bics[1] > bics[2] > bics[3]  # too few latent units: a large likelihood loss
    assert all(bics[d] > bics[TRUE_DIM] for d in GRID if d > TRUE_DIM)  # too many: penalty without gain

    for d in GRID:
        au = int(table.set_index("latent_dim").active_units[d])
        if d >= TRUE_DIM:
            assert abs(au - TRUE_DIM) <= 1, (d, au)  # the extra units collapse onto the prior
        else:
            assert au == d
    md = (project / "reports/report.md").read_text()
    assert f"true latent dimension {TRUE_DIM}" in md
    # and the pick is firm: the true dimension has the lowest BIC in at least 90% of the bootstrap resamples
    freq = table.set_index("latent_dim").selection_frequency
    assert freq[TRUE_DIM] >= 0.9 and sel["selection_frequency"]["bic"] == pytest.approx(freq[TRUE_DIM]), freq.to_dict()
    assert freq.sum() == pytest.approx(1.0)
