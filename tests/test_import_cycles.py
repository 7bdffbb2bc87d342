"""No import cycles in ``src/dipkit``: found by reading the source with ``ast`` (nothing is imported).

A module *imports* another at module level when an ``import``/``from … import …`` statement runs
while the module itself is being imported: at the top level, in ``if``/``try``/``with`` blocks and
class bodies there — but not under ``if TYPE_CHECKING:`` and not inside functions. Relative forms
(``from . import x``, ``from ..a import b``) are resolved; ``from pkg import name`` depends on the
module ``pkg.name`` when there is one, else on ``pkg`` itself (a name defined in its
``__init__``). Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``, so it depends on them
too, except on the importing module's own enclosing packages (those are already being imported).

* :func:`test_no_module_level_import_cycles`: the module-level graph has no cycle.
* :func:`test_function_level_cycles_are_the_known_ones`: imports inside functions (lazy imports)
  break a cycle at import time but still tie the modules together; the ones allowed to remain are
  listed in :data:`KNOWN_LAZY_CYCLES` (none now), and no other may appear.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: lazy (function-level) cycles that may remain, as sets of modules: every strongly connected component
#: of the graph with function-level imports must lie inside one of these. None remains: the run modules
#: (dipkit.run) that imported each other inside functions were layered — config validates ``method:
#: auto`` with run.portfolio (not run.auto), the dispatch to auto lives in dipkit.run.reconstruct (not
#: in the runner auto uses), and run directories are read back for pictures in rundir (pictures only
#: draws).
KNOWN_LAZY_CYCLES: list[set[str]] = []


# ---------------------------------------------------------------------- the graph
def _modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is_package)}`` of every module under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, is_pkg: bool, modules, root: str) -> list[tuple[str, bool]]:
    """``[(imported module, inside a function)]`` of module ``name`` (only modules of ``root``)."""
    package = name if is_pkg else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def known(target: str) -> str | None:
        while target and target not in modules:  # ``import a.b.name``: the longest module prefix
            target = target.rpartition(".")[0]
        return target or None

    def visit(nodes, lazy: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse, lazy)
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(ast.iter_child_nodes(node), True)
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == root or alias.name.startswith(root + "."):
                        target = known(alias.name)
                        if target:
                            found.append((target, lazy))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if not (mod == root or mod.startswith(root + ".")):
                    continue
                for alias in node.names:
                    sub = f"{mod}.{alias.name}"
                    target = sub if sub in modules else known(mod)
                    if target:
                        found.append((target, lazy))
            else:
                visit(ast.iter_child_nodes(node), lazy)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body, False)
    return found


def import_graph(root_dir: Path = SRC, package: str = "dipkit", *, lazy: bool = False) -> dict[str, set[str]]:
    """``{module: modules it imports}``: module level only, or with ``lazy`` also inside functions."""
    modules = _modules(root_dir, package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}  # enclosing packages
        edges = set()
        for target, in_function in _imports(name, path, is_pkg, modules, package):
            if in_function and not lazy:
                continue
            edges.add(target)
            parts = target.split(".")
            edges.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                         if p in modules and p not in own)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:  # iterative, so deep graphs do not hit the recursion limit
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(out)


def _path(graph, comp: list[str]) -> str:
    """One cycle through the component, for the failure message: ``a → b → … → a``."""
    members, start = set(comp), comp[0]
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    chain = [v]
                    while prev[chain[-1]] is not None:
                        chain.append(prev[chain[-1]])
                    return " → ".join([*reversed(chain), start])
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return " ↔ ".join(comp)


# ---------------------------------------------------------------------- the detector itself
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


@pytest.mark.parametrize("files,want", [
    ({"pkg/__init__.py": "", "pkg/a.py": "from . import b\n", "pkg/b.py": "from .a import x\n"},
     [["pkg.a", "pkg.b"]]),
    ({"pkg/__init__.py": "from . import a\nX = 1\n", "pkg/a.py": "from . import X\n"},  # a name of the package
     [["pkg", "pkg.a"]]),
    ({"pkg/__init__.py": "", "pkg/sub/__init__.py": "from ..a import f\n", "pkg/sub/m.py": "",
      "pkg/a.py": "import pkg.sub.m\n"},  # importing pkg.sub.m runs pkg.sub first
     [["pkg.a", "pkg.sub"]]),
    ({"pkg/__init__.py": "", "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
      "    from .b import B\n", "pkg/b.py": "from .a import A\n"}, []),
    ({"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from .b import B\n", "pkg/b.py": "from .a import f\n"}, []),
    ({"pkg/__init__.py": "", "pkg/a.py": "class C:\n    from .b import B\n",  # class bodies run at import
      "pkg/b.py": "try:\n    from .a import C\nexcept ImportError:\n    pass\n"}, [["pkg.a", "pkg.b"]]),
], ids=["relative", "package-name", "parent-package", "type-checking", "lazy", "class-body-and-try"])
def test_detector(tmp_path, files, want):
    _write(tmp_path, files)
    assert cycles(import_graph(tmp_path, "pkg")) == want


def test_detector_sees_lazy_cycles(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from .b import B\n",
                      "pkg/b.py": "from .a import f\n"})
    assert cycles(import_graph(tmp_path, "pkg", lazy=True)) == [["pkg.a", "pkg.b"]]


# ---------------------------------------------------------------------- dipkit
def test_no_module_level_import_cycles():
    graph = import_graph()
    assert len(graph) > 100  # the whole package was read
    found = cycles(graph)
    assert not found, "import cycles in src/dipkit: " + "; ".join(_path(graph, c) for c in found)


def test_function_level_cycles_are_the_known_ones():
    graph = import_graph(lazy=True)
    new = [c for c in cycles(graph) if not any(set(c) <= known for known in KNOWN_LAZY_CYCLES)]
    assert not new, ("new import cycles through function-level imports (move the shared code down, "
                     "see dipkit.core): " + "; ".join(_path(graph, c) for c in new))


def test_methods_and_baselines_share_core_downward():
    """Methods and baselines import neither each other's packages nor dipkit.inputs at module level,
    and dipkit.core imports none of them, even inside functions."""
    graph, lazy = import_graph(), import_graph(lazy=True)
    for name, edges in lazy.items():
        if name.startswith("dipkit.core"):
            assert not {e for e in edges if e.split(".")[1] in ("methods", "baselines", "inputs")}, name
    for name, edges in graph.items():
        if name.startswith("dipkit.methods.") and name != "dipkit.methods.registry":
            assert not any(e.startswith("dipkit.baselines") for e in edges), name
        if name.startswith(("dipkit.methods", "dipkit.baselines")):
            assert "dipkit.inputs" not in edges, name
