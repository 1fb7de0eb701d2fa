"""Data read at its real scale, through the prepare stage: for each kind of stored data, the
prepared data's mean pixel equals the source's mean intensity (exactly where no binarisation
happens, within sampling error where the Bernoulli likelihood binarises grey levels), and
meta.json names the rule that was applied.

Two kinds (THROUGH_DVC) run through a real `dvc repro prepare`; the others run the stage's entry
point in this process (vaebic.cli.run_cli with the stage's main, in the project, as its script
runs it): a process of its own and DVC's bookkeeping would prove nothing more about the reading,
and cost about a second each."""

import json
import logging

import numpy as np
import pytest
from PIL import Image
from pipeline_project import dvc, edit_params, run_stage_in_process, tiny
from test_intensity import write_png

pytestmark = pytest.mark.slow

RNG = np.random.default_rng(1)
N, SIDE = 200, 8  # 12,800 pixels: a binarised mean lies within 0.02 of the intensity mean (4.5 sigma)


@pytest.fixture(scope="module")
def project(new_project, tmp_path_factory):
    return new_project(tmp_path_factory.mktemp("intensity"), tiny(sweep={"latent_dims": [2]}))


def array_file(name, stored):
    def write(raw):
        (np.savez if name.endswith(".npz") else np.save)(raw / name, stored)
        return f"data/raw/{name}"

    return write


def image_folder(name, images, save):
    def write(raw):
        folder = raw / name
        folder.mkdir()
        for i, im in enumerate(images):
            save(folder / f"{i:03d}", im)
        return f"data/raw/{name}"

    return write


def png(path, a):
    Image.fromarray(a).save(f"{path}.png")


BINARY = RNG.random((N, SIDE, SIDE)) < 0.3
GREY8 = RNG.integers(0, 256, (N, SIDE, SIDE))
GREY16 = RNG.integers(0, 65536, (N, SIDE, SIDE))
COLOUR8 = RNG.integers(0, 256, (N, SIDE, SIDE, 4)).astype(np.uint8)
COLOUR16 = RNG.integers(0, 65536, (N, SIDE, SIDE, 3)).astype(np.uint16)
PALETTE = [Image.fromarray(c[..., :3]).convert("P") for c in COLOUR8[:50]]
OPAQUE = COLOUR8.copy()
OPAQUE[..., 3] = 255
ALPHA = COLOUR8[..., 3:] / 255

# (case, writer of the source, extra data params, likelihood, the source's mean intensity, rule, exact)
CASES = [
    # the rows of the issue: what was divided by 255, clipped to 8 bits, or refused
    (
        "uint8 0/1 npz (binarised MNIST as often stored)",
        array_file("binary.npz", BINARY.astype(np.uint8)),
        {},
        "bernoulli",
        BINARY.mean(),
        "binary 0/1",
        True,
    ),
    (
        "folder of 16-bit grey PNGs",
        image_folder("png16", GREY16.astype(np.uint16), png),
        {},
        "bernoulli",
        GREY16.mean() / 65535,
        "16-bit grey levels / 65535",
        False,
    ),
    (
        "folder of 16-bit grey PNGs, grey levels kept",
        image_folder("png16b", GREY16.astype(np.uint16), png),
        {},
        "continuous_bernoulli",
        GREY16.mean() / 65535,
        "16-bit grey levels / 65535",
        True,
    ),
    ("int64 0/1 npy", array_file("b64.npy", BINARY.astype(np.int64)), {}, "bernoulli", BINARY.mean(), "binary 0/1", True),
    ("uint16 0/1 npy", array_file("b16.npy", BINARY.astype(np.uint16)), {}, "bernoulli", BINARY.mean(), "binary 0/1", True),
    ("int64 0-255 npy", array_file("g64.npy", GREY8.astype(np.int64)), {}, "gaussian", GREY8.mean() / 255, "8-bit grey levels / 255", True),
    (
        "int32 0-255 npy",
        array_file("g32.npy", GREY8.astype(np.int32)),
        {},
        "bernoulli",
        GREY8.mean() / 255,
        "8-bit grey levels / 255",
        False,
    ),
    # the other rules
    ("bool npy", array_file("bool.npy", BINARY), {}, "bernoulli", BINARY.mean(), "binary 0/1", True),
    (
        "uint16 npy",
        array_file("g16.npy", GREY16.astype(np.uint16)),
        {},
        "gaussian",
        GREY16.mean() / 65535,
        "16-bit grey levels / 65535",
        True,
    ),
    ("float npy in [0, 1]", array_file("f.npy", GREY8 / 255.0), {}, "gaussian", GREY8.mean() / 255, "float in [0, 1]", True),
    (
        "12-bit data with data.intensity_max 4095",
        array_file("g12.npy", (GREY16 // 16).astype(np.uint16)),
        {"intensity_max": 4095},
        "gaussian",
        (GREY16 // 16).mean() / 4095,
        "values / 4095 (data.intensity_max)",
        True,
    ),
    (
        "folder of 8-bit grey PNGs",
        image_folder("png8", GREY8.astype(np.uint8), png),
        {},
        "gaussian",
        GREY8.mean() / 255,
        "8-bit grey levels / 255",
        True,
    ),
    ("folder of 0/1 mask PNGs", image_folder("masks", BINARY.astype(np.uint8), png), {}, "bernoulli", BINARY.mean(), "binary 0/1", True),
    ("folder of 1-bit PNGs", image_folder("bits", BINARY, png), {}, "bernoulli", BINARY.mean(), "binary 0/1", True),
    (
        "folder of 16-bit TIFFs",
        image_folder("tif16", GREY16.astype(np.uint16), lambda p, a: Image.fromarray(a).save(f"{p}.tif")),
        {},
        "gaussian",
        GREY16.mean() / 65535,
        "16-bit grey levels / 65535",
        True,
    ),
    (
        "folder of 16-bit colour PNGs",
        image_folder("rgb16", COLOUR16, lambda p, a: write_png(p.with_suffix(".png"), a, 2, 16)),
        {},
        "gaussian",
        COLOUR16.mean() / 65535,
        "16-bit grey levels / 65535",
        True,
    ),
    (
        "folder of palette PNGs",
        image_folder("palette", PALETTE, lambda p, im: im.save(f"{p}.png")),
        {},
        "gaussian",
        np.mean([np.asarray(im.convert("RGB")) for im in PALETTE]) / 255,
        "8-bit grey levels / 255",
        True,
    ),
    (
        "folder of RGBA PNGs with an opaque alpha",
        image_folder("opaque", OPAQUE, lambda p, a: Image.fromarray(a, "RGBA").save(f"{p}.png")),
        {},
        "gaussian",
        OPAQUE[..., :3].mean() / 255,
        "8-bit grey levels / 255",
        True,
    ),
    (
        "folder of transparent RGBA PNGs over white",
        image_folder("transparent", COLOUR8, lambda p, a: Image.fromarray(a, "RGBA").save(f"{p}.png")),
        {"alpha": "over_white"},
        "gaussian",
        (COLOUR8[..., :3] / 255 * ALPHA + (1 - ALPHA)).mean(),
        "8-bit grey levels / 255",
        True,
    ),
]


THROUGH_DVC = {"uint8 0/1 npz (binarised MNIST as often stored)", "folder of 16-bit grey PNGs, grey levels kept"}


def prepare_in_process(project, monkeypatch, caplog) -> str:
    """The prepare stage's script, run in this process in the project: its log."""
    caplog.set_level(logging.INFO)
    run_stage_in_process(project, ["stages/prepare.py", "--data", "data/prepared"], monkeypatch)
    return caplog.text


@pytest.mark.parametrize("case, write, extra, likelihood, source_mean, rule, exact", CASES, ids=[c[0] for c in CASES])
def test_prepare_keeps_the_source_mean_intensity(project, case, write, extra, likelihood, source_mean, rule, exact, monkeypatch, caplog):
    path = write(project / "data/raw")
    name = "array" if path.endswith((".npy", ".npz")) else "image_folder"
    edit_params(
        project,
        {"data": {"name": name, "path": path, "intensity_max": "auto", "alpha": "refuse", **extra}, "model": {"likelihood": likelihood}},
    )
    if case in THROUGH_DVC:
        proc = dvc(project, "repro", "prepare")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        log = proc.stdout + proc.stderr
    else:
        log = prepare_in_process(project, monkeypatch, caplog)
    assert f"read as {rule}" in log  # the log names the rule
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    prepared = np.concatenate([np.load(project / f"data/prepared/{split}_x.npy") for split in ("train", "val", "test")])
    assert meta["intensity"]["rule"] == rule and meta["source"] == path
    assert meta["intensity"]["mean_intensity"] == pytest.approx(source_mean, abs=1e-5)
    if exact:
        assert prepared.mean(dtype=np.float64) == pytest.approx(source_mean, abs=1e-5)
    else:  # grey levels binarised: each pixel is 1 with probability its intensity
        assert set(np.unique(prepared)) == {0, 1}
        assert prepared.mean(dtype=np.float64) == pytest.approx(source_mean, abs=0.02)
    if rule == "binary 0/1" and likelihood == "bernoulli":
        assert meta["binarization"].startswith("none: the inputs are binary")
        assert "used as they are" in log
