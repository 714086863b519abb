"""No import circles in ``kiosk``, ``kiosk_sandbox`` and ``bench``, counting every ``import`` a module holds: at the top, under
``if TYPE_CHECKING:`` and inside functions (read from the source with :mod:`ast`, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kiosk", "kiosk_sandbox", "bench")
#: The only modules of ``kiosk`` that import the sandbox, and only inside a function (the commands that run it).
SANDBOX_IMPORTERS = {"kiosk.commands.sandbox", "kiosk.demo.runner"}


def module_files() -> dict[str, Path]:
    """Every module of :data:`PACKAGES` by dotted name (a package by its own name, for its ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports anywhere in its source.

    ``from P import x`` counts as an import of ``P.x`` when that is a module, else of ``P``; relative imports are
    resolved against ``name``'s package.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, over :data:`PACKAGES`."""
    files = module_files()
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach one another (Tarjan's algorithm), only those of two or more, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def describe(graph: dict[str, set[str]], group: list[str]) -> str:
    """One circle's imports, one ``a -> b`` a line."""
    members = set(group)
    return "\n".join(f"  {source} -> {target}" for source in group for target in sorted(graph[source] & members))


def test_the_import_graph_has_no_circles() -> None:
    """No module of kiosk, kiosk_sandbox or bench imports, directly or through others, a module that imports it back."""
    graph = import_graph()
    circles = strongly_connected(graph)
    report = "\n".join(
        f"circle {number}: {', '.join(group)}\n{describe(graph, group)}" for number, group in enumerate(circles, 1)
    )
    print(report)
    assert not circles, f"{len(circles)} import circle(s):\n{report}"


def test_the_checker_sees_imports_under_type_checking_and_in_functions(tmp_path: Path) -> None:
    """An import under ``if TYPE_CHECKING:`` and one inside a function both count, relative ones resolved."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .other import Thing\n"
        "def f():\n    from kiosk.third import x\n    import kiosk.fourth\n",
        encoding="utf-8",
    )
    known = {"kiosk.pkg.mod", "kiosk.pkg.other", "kiosk.third", "kiosk.fourth"}
    assert imported_modules("kiosk.pkg.mod", source, known) == {"kiosk.pkg.other", "kiosk.third", "kiosk.fourth"}
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def sandbox_imports(path: Path) -> list[tuple[int, bool]]:
    """Each import of ``kiosk_sandbox`` in the module at ``path``: (line, inside a function)."""
    found: list[tuple[int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and not child.level:
                names = [child.module or ""]
            if any(name == "kiosk_sandbox" or name.startswith("kiosk_sandbox.") for name in names):
                found.append((child.lineno, in_function))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), False)
    return found


def test_the_daemon_imports_the_sandbox_only_inside_its_two_commands() -> None:
    """``kiosk_sandbox`` (the ``sandbox`` extra) is imported only by ``kiosk sandbox`` and ``kiosk demo``, lazily."""
    wrong = [
        f"{name}:{line}" + ("" if in_function else " (at the top)")
        for name, path in module_files().items()
        if name == "kiosk" or name.startswith("kiosk.")
        for line, in_function in sandbox_imports(path)
        if not in_function or name not in SANDBOX_IMPORTERS
    ]
    assert not wrong, f"kiosk modules importing kiosk_sandbox: {wrong}"
    assert all(any(f for _, f in sandbox_imports(module_files()[name])) for name in SANDBOX_IMPORTERS)
