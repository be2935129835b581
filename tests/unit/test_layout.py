"""The architecture as the import graph shows it: which part may import which, and dvc.yaml deps that cover
every project module a stage runs (directly or transitively), so an edit anywhere re-runs the stages it feeds."""
import ast
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

# part -> parts it must never reach, directly or through other modules
FORBIDDEN = {
    "pipeline/method": ("pipeline/evaluate", "stages"),
    "pipeline/train": ("pipeline/evaluate", "stages"),
    "pipeline/data": ("pipeline/method", "pipeline/evaluate", "stages"),
    "pipeline/backbone": ("pipeline/method", "pipeline/evaluate", "stages"),
}


def holds_code(path: Path) -> bool:
    """False for a file that is only a docstring (the parts' __init__.py), an `__all__` and a module `__getattr__`
    (pipeline/__init__.py's lazy `Segmenter`, which runs only when a user asks for that name): importing it
    runs nothing that can change an output."""
    body = ast.parse(path.read_text()).body
    body = body[1:] if ast.get_docstring(ast.Module(body=body, type_ignores=[])) else body
    lazy = [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
            or isinstance(n, ast.Assign) and [getattr(t, "id", "") for t in n.targets] == ["__all__"]]
    return len(body) > len(lazy)


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """Dotted project module name -> its file (package -> its __init__.py when that holds code), None for
    anything outside the project."""
    if name.split(".")[0] not in ("pipeline", "stages"):
        return None
    base = root.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file() and holds_code(base / "__init__.py"):
        return base / "__init__.py"
    return None


def direct_imports(path: Path, root: Path = ROOT) -> set[Path]:
    """Project files that importing `path` executes directly: every `import` / `from ... import` in it (also
    inside functions), each with the __init__.py of its parent packages."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import module`
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the packages on the way are executed too
                f = module_file(".".join(parts[:i]), root)
                if f is not None:
                    found.add(f)
    found.discard(path)
    return found


def closure(path: Path, root: Path = ROOT) -> set[Path]:
    """Every project file that running `path` imports, directly or transitively (itself included)."""
    seen, todo = {path}, [path]
    while todo:
        for f in direct_imports(todo.pop(), root):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return seen


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_import_graph_reads_deferred_and_package_imports(tmp_path):
    (tmp_path / "pipeline" / "pkg").mkdir(parents=True)
    (tmp_path / "pipeline" / "pkg" / "__init__.py").write_text('"""Only a docstring."""\n')
    (tmp_path / "pipeline" / "code").mkdir()
    (tmp_path / "pipeline" / "code" / "__init__.py").write_text('"""Docstring."""\nX = 1\n')
    (tmp_path / "pipeline" / "pkg" / "leaf.py").write_text("import os\n")
    (tmp_path / "pipeline" / "top.py").write_text("def f():\n    from pipeline.pkg import leaf\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "s.py").write_text("from pipeline import top\nfrom pipeline.code import X\nimport numpy\n")
    got = {p.relative_to(tmp_path).as_posix() for p in closure(tmp_path / "stages" / "s.py", tmp_path)}
    assert got == {"stages/s.py", "pipeline/top.py", "pipeline/pkg/leaf.py", "pipeline/code/__init__.py"}


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_part_never_reaches_what_it_must_not_import(part):
    offenders = []
    for f in sorted((ROOT / part).rglob("*.py")):
        for g in closure(f):
            if any(covered(rel(g), [bad]) for bad in FORBIDDEN[part]):
                offenders.append(f"{rel(f)} -> {rel(g)}")
    assert not offenders, f"{part} must not import {FORBIDDEN[part]}:\n" + "\n".join(offenders)


# part -> the only project files it may reach (besides its own): params in and artifacts out sit under every other
# part, so they import none of it (config asks the backbone's name module, which imports no config, for the patch)
ONLY = {
    "pipeline/io": (),
    "pipeline/config": ("pipeline/backbone/vit_name.py",),
}


@pytest.mark.parametrize("part", sorted(ONLY))
def test_params_and_artifacts_import_no_other_part(part):
    offenders = [f"{rel(f)} -> {rel(g)}" for f in sorted((ROOT / part).rglob("*.py")) for g in sorted(closure(f))
                 if not covered(rel(g), [part, *ONLY[part]])]
    assert not offenders, f"{part} may import only {ONLY[part]}:\n" + "\n".join(offenders)


def test_every_library_module_sits_in_a_part():
    loose = sorted(rel(f) for f in (ROOT / "pipeline").glob("*.py"))
    assert loose == ["pipeline/__init__.py", "pipeline/__main__.py", "pipeline/cli.py", "pipeline/distributed.py",
                     "pipeline/parallel.py"]
    for pkg in ("config", "io", "data", "backbone", "method", "train", "evaluate", "report"):
        init = ROOT / "pipeline" / pkg / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{rel(init)} needs a docstring saying what it holds"


def test_project_imports_are_absolute():
    """The import graph above reads absolute imports only: a relative one (`from .files import x`) would hide an
    edge from the layering and the dvc.yaml deps checks."""
    files = [f for d in ("pipeline", "stages") for f in (ROOT / d).rglob("*.py")]
    assert not [rel(f) for f in files if any(isinstance(n, ast.ImportFrom) and n.level
                                             for n in ast.walk(ast.parse(f.read_text())))]


def test_no_code_edits_sys_path():
    files = [f for d in ("pipeline", "stages", "scripts", "benchmarks", "tests") for f in (ROOT / d).rglob("*.py")]
    edits = ("sys.path." + "insert", "sys.path." + "append")  # split so this file does not match itself
    assert not [rel(f) for f in files if any(e in f.read_text() for e in edits)]


def stage_deps() -> dict[str, tuple[str, list[str]]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: (s["cmd"], [str(d) for d in s.get("deps", [])]) for name, s in stages.items()}


@pytest.mark.parametrize("stage", sorted(stage_deps()))
def test_dvc_deps_cover_every_module_the_stage_runs_and_no_other(stage):
    cmd, deps = stage_deps()[stage]
    assert cmd == f"python -m stages.{stage}"
    used = {rel(f) for f in closure(ROOT / "stages" / f"{stage}.py")}
    missing = sorted(u for u in used if not covered(u, deps))
    assert not missing, f"dvc.yaml stage {stage}: add to deps {missing}"
    code_deps = [d for d in deps if d.startswith(("pipeline", "stages"))]
    stale = sorted(d for d in code_deps if not any(covered(u, [d]) for u in used))
    assert not stale, f"dvc.yaml stage {stage}: deps {stale} are not imported by stages/{stage}.py"
