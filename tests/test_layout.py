"""The package's layout: no import cycles between its modules, and no private names of other
libraries outside ``_compat.py``."""

from __future__ import annotations

import ast
import pathlib

import flask_utm_tracker

PACKAGE = pathlib.Path(flask_utm_tracker.__file__).parent
#: Names that start with "_" and are documented public API: werkzeug's LocalProxy, namedtuples.
PUBLIC_UNDERSCORED = {"_get_current_object", "_replace", "_asdict", "_fields", "_make"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        out[name.removesuffix(".__init__") if name != "__init__" else ""] = ast.parse(
            path.read_text(encoding="utf-8")
        )
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The nodes inside ``if TYPE_CHECKING:`` blocks (never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return skipped


def _runtime_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package modules ``name`` imports when run (``if TYPE_CHECKING:`` blocks left out,
    imports inside functions counted)."""
    skipped = _type_checking_only(tree)
    package = name.rsplit(".", 1)[0] if "." in name else ""
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base_parts = package.split(".") if package else []
        base_parts = (
            base_parts[: len(base_parts) - (node.level - 1)] if node.level > 1 else base_parts
        )
        base = ".".join([*base_parts, *(node.module.split(".") if node.module else [])])
        candidates = [f"{base}.{alias.name}".lstrip(".") for alias in node.names]
        for candidate in candidates:
            if candidate in known:
                found.add(candidate)
            elif base in known:
                found.add(base)
    found.discard(name)
    return found


def test_no_import_cycles() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _runtime_imports(name, tree, known) - {""} for name, tree in modules.items()}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif len(path) < 30:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, f"import cycles: {sorted({' -> '.join(c) for c in cycles})[:10]}"


def test_no_private_names_of_other_libraries() -> None:
    """``flask.globals.request_ctx``, ``login_manager._request_callback``,
    ``app._got_first_request`` and the like break on the next release; only ``_compat.py``
    may touch them."""
    offenders = []
    for name, tree in _modules().items():
        if name == "_compat":
            continue
        skipped = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                parts = [*node.module.split("."), *(a.name for a in node.names)]
                if any(p.startswith("_") and not p.startswith("__") for p in parts):
                    offenders.append(f"{name}: from {node.module} import ...")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                allowed = node.attr.startswith("__") or node.attr in PUBLIC_UNDERSCORED
                own = isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}
                if not allowed and not own:
                    offenders.append(f"{name}: .{node.attr}")
    assert not offenders, offenders
