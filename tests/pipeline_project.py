"""A temporary copy of the project, driven with the real `dvc` command (shared by the end-to-end tests)."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def make_project(folder: Path, changes: dict) -> Path:
    """Copy what `dvc repro` needs into folder (a git repository), with params.yaml edited by changes."""
    for name in ("dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvcignore", "data/raw/README.md"):
        if (ROOT / name).exists():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, folder / name)
    for sub in ("stages", "src"):
        shutil.copytree(ROOT / sub, folder / sub, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    edit_params(folder, changes)
    return folder


def edit_params(project: Path, changes: dict) -> None:
    path = project / "params.yaml"
    p = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        p.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def dvc(project: Path, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(env_extra or {})
    return subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True, timeout=900)


def repro(project: Path, env_extra=None, expect_ok=True):
    proc = dvc(project, "repro", env_extra=env_extra)
    out = proc.stdout + proc.stderr
    if expect_ok:
        assert proc.returncode == 0, out
    ran = re.findall(r"Running stage '([^']+)'", out)
    return proc, out, ran


def snapshot(project: Path) -> dict:
    """Content hash of every output file: to prove that a failed run changed nothing."""
    files = {}
    for folder in ("data/prepared", "models", "metrics", "reports"):
        for f in sorted((project / folder).rglob("*")):
            if f.is_file():
                files[str(f.relative_to(project))] = hashlib.sha256(f.read_bytes()).hexdigest()
    files["dvc.lock"] = hashlib.sha256((project / "dvc.lock").read_bytes()).hexdigest()
    return files


def mlflow_client(project: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
