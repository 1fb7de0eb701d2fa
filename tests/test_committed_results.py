"""The results committed to git were made by the code and params committed beside them.

`dvc.lock` records the hash of every dependency and output of the run that made the committed
reports. If a change to `src/`, `stages/` or `params.yaml` lands without a fresh `dvc repro`
(or a `dvc commit`, when the change cannot move a result), `dvc status` on a user's clone says
that every stage is stale and the README's figures describe code that no longer exists.
"""

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIX = "run `dvc repro` (or `dvc commit` if the change cannot alter any output) and commit dvc.lock with the outputs"


def tracked_files() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e})")
    return {p for p in out.decode().split("\0") if p}


def lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_dvc_lock_matches_the_committed_code_params_and_outputs():
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tracked = tracked_files()
    stale, checked = [], 0
    for stage, entry in lock["stages"].items():
        for item in entry.get("deps", []) + entry.get("outs", []):
            path = item["path"]
            if path not in tracked:  # directories, data and models live outside git
                continue
            checked += 1
            md5 = hashlib.md5((ROOT / path).read_bytes()).hexdigest()
            if md5 != item["md5"]:
                stale.append(f"{stage}: {path}")
        for key, value in entry.get("params", {}).get("params.yaml", {}).items():
            checked += 1
            if lookup(params, key) != value:
                stale.append(f"{stage}: params.yaml {key}")
    assert checked > 50, checked  # the lock names the stage scripts, src/ modules, reports and metrics
    assert not stale, f"dvc.lock is out of date with the committed files ({FIX}):\n  " + "\n  ".join(stale)
