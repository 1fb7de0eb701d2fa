"""A temporary copy of the project, driven with the real `dvc` command (shared by the end-to-end tests)."""

import hashlib
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# The one tiny configuration of the end-to-end tests: two models of two epochs on 600 digits. The
# finished project of the whole test run (conftest.py's `finished_project`) is built from it; a test
# that needs other settings says which, as changes to it.
TINY = {
    "data": {"max_examples": 600},
    "model": {"hidden_sizes": [32]},
    "sweep": {"latent_dims": [2, 4], "seeds": [0]},
    "train": {"epochs": 2, "batch_size": 100},
    "evaluate": {"n_samples": 2, "k_samples": 20},
    "report": {"n_samples": 16, "dpi": 50},
}


def tiny(**sections) -> dict:
    """TINY with some sections' keys changed: tiny(train={"epochs": 200}) keeps the other train keys."""
    return {s: {**TINY.get(s, {}), **sections.get(s, {})} for s in {**TINY, **sections}}


def clean_env(**extra) -> dict:
    """The environment a stage, `dvc` or a sweep sees in the tests: this interpreter's tools first on
    PATH, and none of the caller's MLflow, DVC or vaebic settings (VAEBIC_DEBUG would print the
    tracebacks the tests check are absent) but VAEBIC_TORCH_FALLBACK, which runs every test on the
    public torch fallbacks; extra added on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "VAEBIC_")) or k == "VAEBIC_TORCH_FALLBACK"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return {**env, **extra}


def run_stage_in_process(project: Path, args: list[str], monkeypatch) -> None:
    """A stage script's command line (stages/<name>.py and its arguments) run in this process, as
    the script runs it: its main through vaebic.cli.run_cli, in project, with the environment the
    script would get (clean_env). A user error ends in SystemExit, as the script's exit."""
    from vaebic.cli import run_cli

    kept = clean_env()
    for key in [k for k in os.environ if k not in kept]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(project)
    stage = importlib.import_module(f"vaebic.stages.{Path(args[0]).stem}")
    sigterm = signal.getsignal(signal.SIGTERM)  # run_cli sets its own
    try:
        run_cli(stage.main, args[1:])
    finally:
        signal.signal(signal.SIGTERM, sigterm)


def make_project(folder: Path, changes: dict = TINY) -> Path:
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
    # 30 minutes: test_known_truth's repro takes under 3 alone, and four times that on a CPU that
    # other jobs share (torch's threads then compete for the cores)
    return subprocess.run(["dvc", *args], cwd=project, env=clean_env(**(env_extra or {})), capture_output=True, text=True, timeout=1800)


def repro(project: Path, *targets: str, env_extra=None, expect_ok=True):
    """`dvc repro [targets]`: (the process, its output, the stages it ran, in order)."""
    proc = dvc(project, "repro", *targets, env_extra=env_extra)
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
    """A client of the project's store, its Model Registry included (whatever registry URI an
    earlier test in this process set globally)."""
    import mlflow

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion(project_or_uri):
    """The registered champion's version record and the model loaded from models:/vaebic@champion."""
    import mlflow

    uri = project_or_uri if isinstance(project_or_uri, str) else f"sqlite:///{project_or_uri / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    version = mlflow.MlflowClient().get_model_version_by_alias("vaebic", "champion")
    return version, mlflow.pytorch.load_model("models:/vaebic@champion")


def copy_project(source: Path, dest: Path) -> Path:
    """A copy of a project, DVC cache and MLflow store included, that runs on as the original would:
    the store's artifact locations (absolute paths) are moved to the copy's own folder."""
    dvc_tmp = (source / ".dvc" / "tmp").resolve()  # locks and DVC's own indexes, rebuilt by DVC
    shutil.copytree(source, dest, symlinks=True, ignore=lambda folder, names: names if Path(folder).resolve() == dvc_tmp else [])
    db = dest / "mlflow.db"
    if db.exists():
        relocate_store(db, str(source.resolve()), str(dest.resolve()))
    return dest


def add_store(project: Path, template: Path) -> Path:
    """Copy an MLflow store made by tracking.setup in template (mlflow.db, mlartifacts/) into project,
    its artifact location moved there: the project starts as one whose first run made its store."""
    shutil.copy(template / "mlflow.db", project / "mlflow.db")
    if (template / "mlartifacts").exists():
        shutil.copytree(template / "mlartifacts", project / "mlartifacts")
    relocate_store(project / "mlflow.db", str(template.resolve()), str(project.resolve()))
    return project


def relocate_store(db: Path, old: str, new: str) -> None:
    """Every text cell of an MLflow SQLite store that names a path under old, under new instead."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for _, column, kind, *_ in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                if kind.upper().startswith(("VARCHAR", "TEXT")):
                    con.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?) > 0', (old, new, old)
                    )
        con.commit()
    finally:
        con.close()
