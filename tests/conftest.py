"""Fixtures shared by the test files."""

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock
from pipeline_project import TINY, add_store, clean_env, copy_project, make_project, repro

from vaebic.sweep import cpu_thread_share

# pytest-xdist's workers share the cores as a sweep's jobs do: each worker, and every stage process
# it starts, gets cores / workers CPU threads (unless the caller set them). Two workers each running
# torch on every core make 4 threads busy-wait on 2 cores: the suite took 11.6 minutes so and 8.8
# with one thread each (2-core AMD EPYC). Results do not depend on it: the tests compare runs of
# one process or seeds, never a run against one with another thread count.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    for key, value in cpu_thread_share(int(os.environ["PYTEST_XDIST_WORKER_COUNT"])).items():
        os.environ.setdefault(key, value)

# A shell starts background jobs (`make test &`, a CI runner's detached step) with SIGINT
# ignored, and an ignored signal stays ignored through every exec: the Ctrl-C tests' `dvc repro`
# and sweep would then never see their Ctrl-C. Handled signals reset on exec, so handling SIGINT
# here gives every process the tests start the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The end-to-end files, longest first (seconds of one file with two pytest workers on a 2-core Intel
# Xeon, cold torch.compile cache: per-file sums of pytest's --durations=0 with make test's options).
# `make test` runs the files on pytest-xdist workers in this order (--dist loadfile
# --no-loadscope-reorder), so the long ones start first and the short ones fill in at the end.
# test_sweep.py starts first and builds the run's finished tiny project (`finished_template`) while
# test_benchmarks.py, which needs none, starts on the other worker.
LONGEST_FIRST = [
    "test_sweep.py",  # 147
    "test_benchmarks.py",  # 72
    "test_known_truth.py",  # 52
    "test_budget.py",  # 38
    "test_resume.py",  # 35
    "test_pipeline.py",  # 35
    "test_tracking.py",  # 27
    "test_model_training.py",  # 26 (torch.compile's first compile)
    "test_likelihoods_pipeline.py",  # 20
    "test_bad_inputs.py",  # 18
    "test_user_data_pipeline.py",  # 16
    "test_iwae.py",  # 4
    "test_calibrated_sigma.py",  # 4
    "test_intensity_pipeline.py",  # 3
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order stays


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder built by build(folder) once per test run, shared by every pytest-xdist worker: the
    first to get here builds it under a file lock, the others wait for it (pytest-xdist's pattern)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").write_text("")
    return folder


def _finish_tiny_project(folder: Path) -> None:
    make_project(folder, TINY)
    proc, out, ran = repro(folder)
    (folder / ".first_run.json").write_text(json.dumps(ran))


@pytest.fixture(scope="session")
def finished_template(tmp_path_factory) -> Path:
    """The tiny project after its first `dvc repro`, built once per test run: copy it, never change it."""
    return _built_once(tmp_path_factory, "finished_tiny_project", _finish_tiny_project)


@pytest.fixture
def finished_project(finished_template, tmp_path_factory) -> Path:
    """A copy of the finished tiny project (DVC cache and MLflow store included), this test's own,
    in a folder of its own (not under tmp_path, where DVC would see it as part of another project)."""
    return copy_project(finished_template, tmp_path_factory.mktemp("finished") / "project")


def _migrated_store(folder: Path) -> None:
    code = "from vaebic import tracking; tracking.setup('vaebic')"
    subprocess.run([sys.executable, "-c", code], env=clean_env(DVC_ROOT=str(folder)), check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    """A folder holding an MLflow SQLite store with the current schema and the experiment `vaebic`,
    made once per test run by tracking.setup: mlflow.db and mlartifacts/. Copy it, never change it."""
    return _built_once(tmp_path_factory, "migrated_store", _migrated_store)


@pytest.fixture
def migrated_store(store_template, tmp_path_factory) -> Path:
    """This test's own copy of the run's migrated MLflow store (store_template)."""
    return copy_project(store_template, tmp_path_factory.mktemp("store") / "store")


@pytest.fixture(scope="session")
def new_project(store_template):
    """make_project(folder, changes), the project starting with a copy of the run's migrated MLflow
    store: a fresh project's first train stage would otherwise make and migrate a store of its own
    (about 1 s of CPU). The run's finished project (finished_template) still makes its own, as a
    user's first `dvc repro` does, and so do the tests that check where runs go."""

    def make(folder: Path, changes: dict = TINY) -> Path:
        return add_store(make_project(folder, changes), store_template)

    return make


#: for tests of the x86 CPU's per-thread subnormal flag (MXCSR), which other CPUs do not have
X86_ONLY = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="checked on x86, whose per-thread MXCSR flags this is about"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on a free 127.0.0.1 port, stopped after the test."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
    ]
    log = open(tmp_path / "server.log", "w")
    # without MLflow 3's job runner and its job workers (GenAI evaluation jobs, which vaebic does not
    # use): seven Python processes, about 13 s of CPU per server start on 2 cores, taken from the tests
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start: " + (tmp_path / "server.log").read_text())
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
