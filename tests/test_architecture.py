"""The package's shape, checked from its source with `ast` (nothing is imported).

Layers, lowest first: a module may import inflamrx modules of its own layer or lower. Every
import statement counts, at module level or inside a function, `import inflamrx.x` and
`from inflamrx.x import y` alike; imports under `if TYPE_CHECKING:` count for direction but not
for cycles (they never run). The implicit import of parent packages is not counted: every module
would otherwise depend on `inflamrx/__init__.py`, which names the whole API by string.

Also: no import cycles, no inflamrx import inside a function (such imports are what hid cycles
before; lazy imports of heavy third-party libraries are fine) and no module over 600 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "inflamrx"
SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 600

# (layer name, modules it holds); a module also holds its submodules, except the package itself.
LAYERS = (
    ("core", ("inflamrx.errors", "inflamrx.config")),
    ("data", ("inflamrx.data",)),
    ("modeling", ("inflamrx.modeling",)),
    ("tracking", ("inflamrx.tracking",)),
    ("serving", ("inflamrx.serving",)),
    ("reporting", ("inflamrx.reporting",)),
    ("jobs", ("inflamrx.jobs",)),
    ("edges", ("inflamrx", "inflamrx.cli", "inflamrx.features")),
)


def layer_of(module: str) -> tuple[int, str] | None:
    """(number, name) of the layer holding ``module``; None when no layer lists it."""
    for number, (name, roots) in enumerate(LAYERS):
        for root in roots:
            # The package root holds only its __init__: a new top-level module must be placed.
            if module == root or (root != PACKAGE and module.startswith(root + ".")):
                return number, name
    return None


@dataclass(frozen=True)
class Import:
    path: str  # e.g. "inflamrx/data/validate.py"
    line: int
    target: str  # the inflamrx module imported, e.g. "inflamrx.jobs.train"
    function: str | None  # the enclosing function's qualified name, None at module level
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def module_name(path: str) -> str:
    """The module a path under src holds: inflamrx/data/__init__.py -> inflamrx.data."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, path: str, modules: set[str]) -> None:
        self.path, self.modules = path, modules
        self.module = module_name(path)
        self.scope: list[str] = []  # enclosing classes and functions
        self.function: str | None = None
        self.type_only = False
        self.found: list[Import] = []

    def _add(self, line: int, name: str) -> None:
        imp = Import(self.path, line, name, self.function, self.type_only)
        # One entry per statement and target: `from m import a, b` imports m once.
        if (name == PACKAGE or name.startswith(PACKAGE + ".")) and imp not in self.found:
            self.found.append(imp)

    def _scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer = self.function
        self.scope.append(node.name)
        if not isinstance(node, ast.ClassDef):
            self.function = ".".join(self.scope)
        self.generic_visit(node)
        self.scope.pop()
        self.function = outer

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        outer, self.type_only = self.type_only, True
        for statement in node.body:
            self.visit(statement)
        self.type_only = outer
        for statement in node.orelse:
            self.visit(statement)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node.lineno, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolved against this module's package
            package = self.module.split(".")
            if not self.path.endswith("/__init__.py"):
                package.pop()
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            # `from inflamrx.data import validate` imports the module inflamrx.data.validate.
            submodule = f"{base}.{alias.name}"
            self._add(node.lineno, submodule if submodule in self.modules else base)


def collect_imports(sources: Mapping[str, str]) -> list[Import]:
    """Every import of an inflamrx module in ``sources`` (path under src -> source text)."""
    modules = {module_name(path) for path in sources}
    found: list[Import] = []
    for path, source in sorted(sources.items()):
        collector = _Collector(path, modules)
        collector.visit(ast.parse(source, filename=path))
        found += collector.found
    return found


# --- the four checks: each returns one message per violation, empty when the tree is clean ----


def layer_violations(sources: Mapping[str, str]) -> list[str]:
    found = [
        f"{path} is in no layer: add {module_name(path)} to LAYERS"
        for path in sorted(sources)
        if layer_of(module_name(path)) is None
    ]
    for imp in collect_imports(sources):
        here, there = layer_of(module_name(imp.path)), layer_of(imp.target)
        if here is None:
            continue  # reported above
        if there is None:
            found.append(f"{imp}, which is in no layer")
        elif there[0] > here[0]:
            found.append(f"{imp} ({there[1]}, layer {there[0]}) from {here[1]} (layer {here[0]})")
    return found


# The command line imports each command's job when that command runs, so `inflamrx --help`
# and `inflamrx validate` start without MLflow, shap or XGBoost. It is the top edge: nothing
# imports it, so its lazy imports cannot hide a cycle.
LAZY_EDGE = "inflamrx/cli/"


def function_level_violations(sources: Mapping[str, str]) -> list[str]:
    return [
        f"{imp} inside {imp.function}() (import it at module level)"
        for imp in collect_imports(sources)
        if imp.function is not None and not imp.path.startswith(LAZY_EDGE)
    ]


def size_violations(sources: Mapping[str, str]) -> list[str]:
    sizes = {path: len(source.splitlines()) for path, source in sources.items()}
    return [
        f"{path} has {n} lines (at most {MAX_LINES})"
        for path, n in sorted(sizes.items())
        if n > MAX_LINES
    ]


def cycle_violations(sources: Mapping[str, str]) -> list[str]:
    """One message per strongly connected component of the runtime import graph, listing the
    imports inside it (each of them is on some cycle)."""
    modules = {module_name(path) for path in sources}
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in collect_imports(sources):
        source = module_name(imp.path)
        if not imp.type_only and imp.target in modules and imp.target != source:
            edges[source].setdefault(imp.target, imp)
    found = []
    for component in _strongly_connected(edges):
        if len(component) > 1:
            inside = [str(i) for m in component for t, i in edges[m].items() if t in component]
            found.append(f"import cycle among {', '.join(component)}: " + "; ".join(inside))
    return found


def _strongly_connected(edges: Mapping[str, Mapping[str, object]]) -> list[list[str]]:
    """Tarjan's algorithm; components come out sorted, each with sorted members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(components)


# --- the real tree --------------------------------------------------------------------------


def package_sources(src: Path = SRC) -> dict[str, str]:
    return {
        path.relative_to(src).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted((src / PACKAGE).rglob("*.py"))
    }


def _fail_on(found: list[str]) -> None:
    if found:
        pytest.fail(f"{len(found)} violation(s):\n" + "\n".join(found), pytrace=False)


def test_imports_point_down_the_layers() -> None:
    _fail_on(layer_violations(package_sources()))


def test_no_import_cycles() -> None:
    _fail_on(cycle_violations(package_sources()))


def test_no_function_level_imports_of_inflamrx() -> None:
    _fail_on(function_level_violations(package_sources()))


def test_no_module_over_600_lines() -> None:
    _fail_on(size_violations(package_sources()))


def test_every_layer_is_present() -> None:
    """Guards the checks above against passing on an empty or moved tree."""
    present = {layer_of(module_name(path)) for path in package_sources()}
    for number, (name, _) in enumerate(LAYERS):
        assert (number, name) in present, f"no module found in layer {name}"


# --- the checker itself, on synthetic packages ----------------------------------------------

CLEAN = {
    "inflamrx/__init__.py": "import importlib\n",
    "inflamrx/errors.py": "class InputError(ValueError): ...\n",
    "inflamrx/config.py": "from inflamrx.errors import InputError\n",
    "inflamrx/data/__init__.py": "",
    "inflamrx/data/validate.py": "from inflamrx.config import x\nfrom . import schema\n",
    "inflamrx/data/schema.py": "import pandas as pd\n",
    "inflamrx/jobs/__init__.py": "",
    "inflamrx/jobs/train.py": (
        "from typing import TYPE_CHECKING\n"
        "import inflamrx.data.validate\n"
        "from inflamrx.data import schema\n"
        "if TYPE_CHECKING:\n"
        "    from inflamrx.cli import app\n"  # upward (reported) but, never run, no cycle
        "def fit():\n"
        "    import mlflow  # heavy third-party import: fine\n"
    ),
    "inflamrx/cli.py": "from inflamrx import errors\nfrom inflamrx.jobs.train import fit\n",
}


def test_checker_passes_a_clean_package() -> None:
    assert cycle_violations(CLEAN) == []
    assert function_level_violations(CLEAN) == []
    assert size_violations(CLEAN) == []
    assert layer_violations(CLEAN) == [
        "inflamrx/jobs/train.py:5 imports inflamrx.cli (edges, layer 7) from jobs (layer 6)"
    ]


def test_checker_catches_an_upward_import() -> None:
    sources = {**CLEAN, "inflamrx/data/schema.py": "\n\nfrom inflamrx.jobs.train import fit\n"}
    assert (
        "inflamrx/data/schema.py:3 imports inflamrx.jobs.train (jobs, layer 6) from data (layer 1)"
        in layer_violations(sources)
    )
    # `from package import module` names the module, so its layer, not the package's.
    sources = {**CLEAN, "inflamrx/errors.py": "from inflamrx import cli\n"}
    assert "inflamrx/errors.py:1 imports inflamrx.cli (edges, layer 7) from core (layer 0)" in (
        layer_violations(sources)
    )


def test_checker_catches_a_module_in_no_layer() -> None:
    sources = {**CLEAN, "inflamrx/helpers.py": ""}
    assert "inflamrx/helpers.py is in no layer: add inflamrx.helpers to LAYERS" in (
        layer_violations(sources)
    )


def test_checker_catches_a_cycle_hidden_in_a_function() -> None:
    sources = {
        **CLEAN,
        "inflamrx/data/schema.py": "def f():\n    from inflamrx.data.validate import g\n",
    }
    assert cycle_violations(sources) == [
        "import cycle among inflamrx.data.schema, inflamrx.data.validate: "
        "inflamrx/data/schema.py:2 imports inflamrx.data.validate; "
        "inflamrx/data/validate.py:2 imports inflamrx.data.schema"
    ]
    assert function_level_violations(sources) == [
        "inflamrx/data/schema.py:2 imports inflamrx.data.validate inside f() "
        "(import it at module level)"
    ]


def test_checker_catches_function_level_imports_in_methods() -> None:
    sources = {
        **CLEAN,
        "inflamrx/config.py": "class C:\n    def m(self):\n        import inflamrx.errors\n",
    }
    assert function_level_violations(sources) == [
        "inflamrx/config.py:3 imports inflamrx.errors inside C.m() (import it at module level)"
    ]


def test_checker_catches_a_long_module() -> None:
    sources = {**CLEAN, "inflamrx/config.py": "x = 1\n" * 601}
    assert size_violations(sources) == ["inflamrx/config.py has 601 lines (at most 600)"]
    assert size_violations({**CLEAN, "inflamrx/config.py": "x = 1\n" * 600}) == []


def test_checker_reads_a_package_on_disk(tmp_path: Path) -> None:
    for path, source in CLEAN.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(source, encoding="utf-8")
    assert package_sources(tmp_path) == CLEAN
