"""The user's own images through the real pipeline, with the conv architecture; results name their data."""

import json

import numpy as np
import pytest
from PIL import Image
from pipeline_project import mlflow_client, repro, tiny

pytestmark = pytest.mark.slow


def test_image_folder_with_conv_end_to_end(new_project, tmp_path):
    project = new_project(
        tmp_path / "p",
        tiny(
            data={"name": "image_folder", "path": "data/raw/shapes", "image_size": 12},
            model={"architecture": "conv", "conv_channels": [8, 16]},
            sweep={"latent_dims": [2]},
            train={"batch_size": 16},
            evaluate={"k_samples": 10},
            report={"n_samples": 8, "dpi": 40},
        ),
    )
    rng = np.random.default_rng(0)
    folder = project / "data/raw/shapes"
    folder.mkdir(parents=True)
    for i in range(40):  # colour squares of two sizes, resized by the pipeline
        side = 16 if i % 2 else 20
        img = np.zeros((side, side, 3), np.uint8)
        a, b = sorted(rng.integers(0, side, 2))
        img[a : b + 2, a : b + 2, i % 3] = 255
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    _, out, ran = repro(project)
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    assert meta["image_shape"] == [3, 12, 12] and meta["source"] == "data/raw/shapes"
    fp = meta["fingerprint"]
    config = json.loads((project / "models/2-0/config.json").read_text())
    assert config["architecture"] == "conv" and config["data_fingerprint"] == fp
    assert json.loads((project / "metrics/2-0.json").read_text())["data_fingerprint"] == fp
    client = mlflow_client(project)
    run = client.search_runs([client.get_experiment_by_name("vaebic").experiment_id], "attributes.run_name = 'd2-s0'")[0]
    assert run.data.tags["data.fingerprint"] == fp and run.data.params["architecture"] == "conv"
    assert (project / "reports/reconstructions.png").stat().st_size > 0

    # a changed image is a changed dependency: prepare runs again, and so does the training that
    # reads what it writes (`dvc repro train@2-0`: the stages after it are DVC's rule, not this test's)
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(folder / "00.png")
    _, out, ran = repro(project, "train@2-0")
    assert ran == ["prepare", "train@2-0"]
    assert json.loads((project / "data/prepared/meta.json").read_text())["fingerprint"] != fp
