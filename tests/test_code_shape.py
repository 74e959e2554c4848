"""The product's code keeps the shape a newcomer can read: small files and functions, no import cycles, a thin app.py.

These read the source with `ast` (imports inside functions count); the product code is the top-level scripts and the
`music_mood` package. Tests and benchmarks are not held to the sizes.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_APP_LINES = 250
SCRIPTS = ("app.py", "recommend.py", "image_to_vector.py", "music_to_vector.py")


def product_files() -> list[Path]:
    return [ROOT / name for name in SCRIPTS] + sorted((ROOT / "music_mood").rglob("*.py"))


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in it, at its top or inside a function."""
    package = module_name(path).rpartition(".")[0] if path.name != "__init__.py" else module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found - {module_name(path)}


def import_cycles() -> list[list[str]]:
    """Every strongly connected group of two or more project modules (Tarjan's algorithm)."""
    files = {module_name(path): path for path in product_files()}
    graph = {name: imported_modules(path, set(files)) for name, path in files.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for neighbour in sorted(graph[node]):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def test_no_product_file_is_over_400_lines():
    long_files = {str(path.relative_to(ROOT)): n for path in product_files()
                  if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES}
    assert long_files == {}


def test_no_product_function_is_over_80_lines():
    long_functions = {}
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert long_functions == {}


def test_no_import_cycle_between_project_modules():
    assert import_cycles() == []


def test_app_is_its_command_line_and_start_up_only():
    source = (ROOT / "app.py").read_text()
    assert len(source.splitlines()) <= MAX_APP_LINES
    late_imports = [node.lineno for node in ast.walk(ast.parse(source))
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for inner in ast.walk(node)
                    if isinstance(inner, (ast.Import, ast.ImportFrom))
                    and any("gradio" in (alias.name if isinstance(inner, ast.Import) else (inner.module or ""))
                            for alias in inner.names)]
    assert late_imports == []


@pytest.mark.parametrize("source, cycle", [
    ({"music_mood/a.py": "from music_mood import b\n", "music_mood/b.py": "def f():\n    from music_mood.a import x\n"},
     ["music_mood.a", "music_mood.b"]),
    ({"music_mood/a.py": "from . import b\n", "music_mood/b.py": "import music_mood.a\n"},
     ["music_mood.a", "music_mood.b"]),
    ({"music_mood/a.py": "from music_mood import b\n", "music_mood/b.py": "import json\n"}, None),
])
def test_the_cycle_check_sees_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch, source, cycle):
    for name, text in source.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "SCRIPTS", ())
    assert import_cycles() == ([cycle] if cycle else [])
