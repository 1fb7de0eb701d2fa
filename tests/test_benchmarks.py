"""The benchmarks run (tiny sizes); their figures are read by people, never asserted as timings."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_iwae_benchmark_runs_and_both_estimates_agree(tmp_path):
    out = tmp_path / "iwae.json"
    proc = subprocess.run([sys.executable, "benchmarks/iwae_speed.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ratio vectorised / one-at-a-time" in proc.stdout
    figures = json.loads(out.read_text())
    assert figures["k_samples"] == 50 and figures["speedup"] > 0
    # same estimator, different examples subsets and draws: both in a plausible range for binarised MNIST
    assert -400 < figures["estimate_mean_nats"] < -50 and -400 < figures["loop_estimate_mean_nats"] < -50


def test_prepare_benchmark_runs(tmp_path):
    out = tmp_path / "prepare.json"
    proc = subprocess.run([sys.executable, "benchmarks/prepare_speed.py", "--n", "700", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ratio per-image loop / vaebic prepare" in proc.stdout
    assert json.loads(out.read_text())["n_images"] == 700
