"""The package's import graph, read from the source: no import circles (a module-level or a deferred import in a
function counts alike: either way the two modules cannot be understood apart), the layering (kernels import no
runtime or service, the runtime no service or grpc), and every module importable."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"kernels": "deltamem.kernels", "runtime": "deltamem.runtime", "service": "deltamem.service"}
EVALS = {"evals": "deltamem.evals"}


def modules(packages: dict[str, str]) -> dict[str, Path]:
    """Module name -> source file, for every module under the given top-level folders."""
    found = {}
    for folder, package in packages.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that `name` imports anywhere in its source (package imports resolved to the
    submodule they name, where they name one)."""

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {resolve(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else resolve(base))
    return found - {None, name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def graph_of(packages: dict[str, str]) -> dict[str, set[str]]:
    known = modules(packages)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_the_graph_walk_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kernels_runtime_and_service_have_no_import_circles():
    assert circles(graph_of(PACKAGES)) == []


def test_evals_have_no_import_circles():
    assert circles(graph_of({**PACKAGES, **EVALS})) == []


def test_the_layers_import_only_downwards():
    graph = graph_of(PACKAGES)
    kernels_up = {(a, b) for a, deps in graph.items() for b in deps if a.startswith("deltamem.kernels") and not
                  b.startswith("deltamem.kernels")}  # fmt: skip
    runtime_up = {(a, b) for a, deps in graph.items() for b in deps if a.startswith("deltamem.runtime") and
                  b.startswith("deltamem.service")}  # fmt: skip
    assert kernels_up == set() and runtime_up == set()
    runtime_files = [path for name, path in modules(PACKAGES).items() if name.startswith("deltamem.runtime")]
    grpc_users = [str(path.relative_to(ROOT)) for path in runtime_files if "import grpc" in path.read_text()]
    assert grpc_users == []


def test_every_module_imports():
    """One interpreter imports them all (with no circle, the order cannot matter); the SGLang model classes need
    SGLang itself and are left out where it is missing."""
    names = [name for name in modules(PACKAGES) if name != "deltamem.service.__main__"]
    if importlib.util.find_spec("sglang") is None:
        names.remove("deltamem.runtime.sglang_backend.models")
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
