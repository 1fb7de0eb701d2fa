"""Fixtures shared by the test files."""

import signal
import socket
import subprocess
import sys
import time

import pytest

# A shell starts background jobs (`make test &`, a CI runner's detached step) with SIGINT
# ignored, and an ignored signal stays ignored through every exec: the Ctrl-C tests' `dvc repro`
# and sweep would then never see their Ctrl-C. Handled signals reset on exec, so handling SIGINT
# here gives every process the tests start the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The end-to-end files, longest first (seconds of one file on a 2-core CPU, measured with two pytest
# workers). `make test` runs the files on pytest-xdist workers in this order (--dist loadfile
# --no-loadscope-reorder), so the long ones start first and the short ones fill in at the end;
# xdist's own order (most tests first) left the longest single test file for last.
LONGEST_FIRST = [
    "test_sweep.py",  # 500
    "test_pipeline.py",  # 280
    "test_resume.py",  # 270
    "test_benchmarks.py",  # 190
    "test_known_truth.py",  # 170
    "test_likelihoods_pipeline.py",  # 160
    "test_bad_inputs.py",  # 150
    "test_budget.py",  # 120
    "test_intensity_pipeline.py",  # 130
    "test_user_data_pipeline.py",  # 80
    "test_tracking.py",  # 70
    "test_calibrated_sigma.py",  # 55
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order stays


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
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
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
