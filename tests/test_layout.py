"""The shape of src/vaebic, read from the code (the AST, function-local imports included, the way
tests/test_stage_deps.py reads them): no import cycles, one library module per DVC stage, no two
public functions sharing a name, and functions a reader can hold."""

import ast
from pathlib import Path

import yaml
from test_stage_deps import imports_of

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_LINES = 60  # a function, docstring included


def modules() -> list[str]:
    return sorted(str(f.relative_to(ROOT)) for f in (SRC / "vaebic").rglob("*.py"))


def import_graph() -> dict[str, set[str]]:
    """Each source file -> the vaebic source files it imports (a package's __init__.py is a node too)."""
    return {m: imports_of(m) - {m} for m in modules()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []


def test_src_has_no_import_cycles():
    graph = import_graph()
    assert sum(len(v) for v in graph.values()) > 40  # the reader sees the imports
    assert cycles(graph) == []


def test_every_stage_has_one_library_module_of_its_name():
    """dvc.yaml's stage -> stages/<script>.py (thin: no function of its own) -> src/vaebic/stages/<script>.py."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        script = stage["cmd"].split()[1]
        library = f"src/vaebic/{script.removesuffix('.py')}.py"
        assert (ROOT / library).exists(), f"{name}: no {library}"
        assert library in imports_of(script), f"{script} does not run {library}"
        tree = ast.parse((ROOT / script).read_text())
        assert not [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)], f"{script} should stay thin"


def public_functions() -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for m in modules():
        if m == "src/vaebic/__init__.py":  # vaebic.load_model is vaebic.model.vae.load_model, for users
            continue
        for node in ast.parse((ROOT / m).read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and node.name != "main":
                names.setdefault(node.name, []).append(m)
    return names


def test_no_two_public_functions_share_a_name():
    """`main` is every command's entry point; any other name means one thing."""
    names = public_functions()
    assert len(names) > 100
    assert {n: ms for n, ms in names.items() if len(ms) > 1} == {}


def long_functions(folder: Path) -> list[str]:
    found = []
    for f in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    found.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    return found


def test_functions_a_reader_can_hold():
    assert long_functions(SRC) + long_functions(ROOT / "benchmarks") == []
