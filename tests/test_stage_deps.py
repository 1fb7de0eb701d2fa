"""dvc.yaml lists, for every stage, each vaebic module its script runs: DVC re-runs a stage only
when a dependency changes, so a module missing there leaves stale results that `dvc status`
calls up to date. The imports are read from the code (the AST, transitively, function-local
imports included), so this check cannot drift from it."""

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Modules no stage lists, and why. Their imports are not followed either.
EXEMPT = {
    "vaebic/__init__.py": "the package's entry point for users; no stage output depends on it",
    "vaebic/cli.py": "argument parsing and turning errors into one line: it decides no output",
    "vaebic/errors.py": "the error type",
    "vaebic/params.py": "the params schema: the validate stage lists it, and every other stage depends on validate's data/params.ok",
    "vaebic/tracking.py": "MLflow logging: the runs it records are not DVC outputs (a model's run id in run.json is new on every run anyway)",
    "vaebic/tracking_process.py": "tracking.py's calls made from a process of their own: it decides no output",
}


def module_file(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "vaebic":
        return None
    path = Path("src", *parts)
    if (ROOT / path).with_suffix(".py").exists():
        return str(path.with_suffix(".py"))
    if (ROOT / path / "__init__.py").exists():
        return str(path / "__init__.py")
    return None


def imports_of(path: str) -> set[str]:
    """The vaebic source files a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if (f := module_file(name)) is not None:
                found.add(f)
    return found


def exempt(f: str) -> bool:
    """EXEMPT's modules, and the subpackages' __init__.py files, which are empty (checked below)."""
    return f.removeprefix("src/") in EXEMPT or (f.endswith("/__init__.py") and f != "src/vaebic/__init__.py")


def needed(script: str) -> set[str]:
    seen, todo = set(), [script]
    while todo:
        for f in imports_of(todo.pop()):
            if f in seen or exempt(f):
                continue
            seen.add(f)
            todo.append(f)
    return seen


def test_every_stage_lists_the_modules_it_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    problems, checked = [], 0
    for name, stage in stages.items():
        script = re.search(r"python (stages/\S+\.py)", stage["cmd"]).group(1)
        deps = {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}
        assert script in deps, f"{name}: its script {script} is not a dependency"
        for f in sorted(needed(script)):
            checked += 1
            if f not in deps:
                problems.append(f"{name}: runs {f} but dvc.yaml does not list it")
        for d in sorted(x for x in deps if x.startswith("src/")):
            if d not in needed(script) and not exempt(d):
                problems.append(f"{name}: lists {d}, which it does not run")
    assert checked > 20
    assert not problems, "\n".join(problems)


def test_the_exemptions_exist():
    for f in EXEMPT:
        assert (ROOT / "src" / f).exists(), f


def test_the_subpackages_init_files_are_empty():
    """An empty __init__.py decides nothing (so no stage lists it) and keeps imports lazy."""
    inits = [f for f in (ROOT / "src/vaebic").glob("*/__init__.py")]
    assert len(inits) >= 5
    for f in inits:
        assert f.read_text() == "", f"{f.relative_to(ROOT)} must stay empty"
