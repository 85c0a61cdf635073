"""The shape of gentool's own code, read as text (nothing is run): each name has one home that its users import it
from, and nothing is imported that is not used."""

from __future__ import annotations

import ast
from pathlib import Path

import gentool
from gentool import links

SOURCES = sorted(Path(gentool.__file__).parent.rglob("*.py"))


def test_link_checks_are_imported_from_links_not_through_fileio():
    """gentool.links is the one home of the link checks; gentool.fileio re-exported them, so a module importing
    them from there hid which module it relied on (and kept the re-exports alive)."""
    own = {name for name, value in vars(links).items() if getattr(value, "__module__", None) == links.__name__}
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "gentool.fileio":
                found += [f"{path.name}: {a.name}" for a in node.names if a.name in own]
            elif isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "fileio" and node.attr in own:
                found.append(f"{path.name}: fileio.{node.attr}")
    assert found == []


def test_no_module_imports_a_name_it_does_not_use():
    """(A re-export says so with a noqa comment on its import, or lists the name in __all__.)"""
    unused = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        tree, lines = ast.parse(text), text.splitlines()
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        exported = next((ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                         and any(getattr(t, "id", None) == "__all__" for t in node.targets)), [])
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or path.name == "__init__.py" \
                    or "noqa" in "\n".join(lines[node.lineno - 1:node.end_lineno]):
                continue
            names = [(a.asname or a.name).split(".")[0] for a in node.names]
            unused += [f"{path.name}:{node.lineno} {n}" for n in names
                       if n not in used and n not in exported and n not in ("annotations", "*")]
    assert unused == []
