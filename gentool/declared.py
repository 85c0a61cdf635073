"""The sampler settings a model class declares (`sample_options`), read from its module's source without importing
it: what `--help` and `gentool models` show per family without loading torch.

Reads the forms families write: a tuple of `SampleOption(...)` calls with literal arguments, a module constant
holding one (imported or not), `Parent.sample_options + (...)`, and a class inheriting its parent's. Anything else
(settings computed at import) reads as None, "not known without importing": `gentool models --check` imports the
models and lists what they declare. tests/test_registry.py checks that this reading agrees with the import's.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

from gentool.fileio import read_regular

SETTING_CLASS = "SampleOption"
FIELD = "sample_options"


class Unknown(Exception):
    """A declaration this reading does not follow."""


def _find_spec(name: str, path):
    for finder in sys.meta_path:
        try:
            spec = finder.find_spec(name, path)
        except (AttributeError, ImportError, TypeError, ValueError):
            continue
        if spec is not None:
            return spec
    return None


def source_file(module: str) -> Path:
    """The source file of `module`, found as the import system would, without running any of it: unlike
    importlib.util.find_spec, which imports the packages above a dotted name (running their __init__)."""
    path, spec, parts = None, None, module.split(".")
    for depth in range(1, len(parts) + 1):
        spec = _find_spec(".".join(parts[:depth]), path)
        path = spec.submodule_search_locations if spec is not None else None
        if spec is None or (depth < len(parts) and path is None):
            raise ImportError(f"no module named {'.'.join(parts[:depth])!r}")
    if not spec.origin or not spec.origin.endswith(".py"):
        raise ImportError(f"no Python source for module {module!r}")
    return Path(spec.origin)


def parsed(module: str) -> ast.Module:
    """`module`'s source, parsed: found and read without running any of its code, nor its parent packages'."""
    origin = source_file(module)
    return ast.parse(read_regular(origin).decode("utf-8"), filename=str(origin))  # a pipe there cannot block


@functools.lru_cache(maxsize=64)
def _tree(module: str) -> ast.Module:
    try:
        return parsed(module)
    except ImportError:
        raise Unknown(module) from None


def _lookup(module: str, name: str) -> tuple[str, ast.AST]:
    """What `name` is at the top of `module`: (module, ClassDef or assigned expression), following imports."""
    for node in _tree(module).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return module, node.value
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    try:
                        return _lookup(node.module, alias.name)
                    except Unknown:  # `from package import module`
                        return f"{node.module}.{alias.name}", ast.Module(body=[], type_ignores=[])
    raise Unknown(name)


def _class(module: str, expr: ast.expr) -> tuple[str, ast.ClassDef]:
    """The class an expression names: `Name` or `module_alias.Name`."""
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        where, node = _lookup(module, expr.value.id)
        if isinstance(node, ast.Module):  # an imported module
            where, node = _lookup(where, expr.attr)
    elif isinstance(expr, ast.Name):
        where, node = _lookup(module, expr.id)
    else:
        raise Unknown(ast.dump(expr))
    if not isinstance(node, ast.ClassDef):
        raise Unknown(ast.dump(expr))
    return where, node


def _class_settings(module: str, node: ast.ClassDef) -> list[dict] | None:
    """The class's own declaration, else the first one found among its bases, depth first (Python's attribute
    lookup for the single inheritance families use); None when none declares any."""
    for item in node.body:
        targets = (item.targets if isinstance(item, ast.Assign)
                   else [item.target] if isinstance(item, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == FIELD for t in targets) and item.value is not None:
            return _settings(module, item.value)
    for base in node.bases:
        if not (isinstance(base, ast.Name) and base.id == "object"):
            found = _class_settings(*_class(module, base))
            if found is not None:
                return found
    return None


def _settings(module: str, expr: ast.expr) -> list[dict]:
    if isinstance(expr, (ast.Tuple, ast.List)):
        return [s for element in expr.elts for s in _settings(module, element)]
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _settings(module, expr.left) + _settings(module, expr.right)
    if isinstance(expr, ast.Attribute) and expr.attr == FIELD:
        return _class_settings(*_class(module, expr.value)) or []
    if isinstance(expr, ast.Name):
        where, value = _lookup(module, expr.id)
        return _settings(where, value)
    if isinstance(expr, ast.Call) and getattr(expr.func, "id", getattr(expr.func, "attr", None)) == SETTING_CLASS:
        try:
            args = [ast.literal_eval(a) for a in expr.args]
            given = dict(zip(("name", "default", "help", "choices", "low", "high"), args))
            given.update({k.arg: ast.literal_eval(k.value) for k in expr.keywords})
        except ValueError:
            raise Unknown(ast.dump(expr)) from None
        bounds = {"choices": list(given["choices"])} if given.get("choices") else \
            {"low": given.get("low", float("-inf")), "high": given.get("high", float("inf"))}
        return [{"name": given["name"], "default": given["default"], **bounds, "help": given["help"]}]
    raise Unknown(ast.dump(expr))


def sampler_settings(module: str, class_name: str) -> list[dict] | None:
    """The settings class `class_name` of `module` declares, as ModelEntry.sampler_settings gives them once imported;
    None when its source does not say in a form read here."""
    try:
        where, node = _lookup(module, class_name)
        return _class_settings(where, node) if isinstance(node, ast.ClassDef) else None
    except (Unknown, ImportError, OSError, SyntaxError, ValueError, KeyError, RecursionError):
        return None


def first_doc_line(module: str, name: str = "") -> str:
    """The first line of the docstring of `module`'s top-level function or class `name` (of the module itself when
    `name` is empty), read from source without running any of it; "" when it has none or is not defined there
    plainly. Raises what finding or parsing the source raises (ImportError, OSError, SyntaxError, ValueError)."""
    tree = parsed(module)
    node = tree if not name else next((n for n in tree.body if getattr(n, "name", None) == name.split(".")[0]
                                       and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))), None)
    doc = (ast.get_docstring(node) or "").strip() if node is not None else ""
    return doc.splitlines()[0] if doc else ""
