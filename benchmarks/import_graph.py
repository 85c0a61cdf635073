"""gentool's own import graph, read from the source (ast), and the cycles in it.

    python benchmarks/import_graph.py [ROOT] [--all]

Every `import gentool.X` / `from gentool.X import ...` / `from gentool import X` in gentool's modules is an edge,
whether at module level or inside a function (a lazy import still ties two modules together); imports under
`if TYPE_CHECKING:` are left out (they never run). Prints the edges among the modules that take part in a cycle
(all edges with --all) and every cycle found, and exits 1 when there is one. ROOT defaults to this checkout.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The gentool modules `name` (the module in `path`) imports anywhere but under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking(node)
            for child in node.body for n in ast.walk(child)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{a.name}" for a in node.names} & modules  # `from gentool import rundir`
            found.update(submodules or {base})
    # a module's own packages are imported with it whatever it imports: not edges
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in found if m in modules and m != name and m not in ancestors}


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in (root / "gentool").rglob("*.py")}
    return {name: imports_of(path, name, set(files)) for name, path in sorted(files.items())}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each module that is on one (breadth-first search back to itself)."""
    found, seen = [], set()
    for start in sorted(edges):
        paths, visited = [[start]], {start}
        while paths:
            path = paths.pop(0)
            nxt = sorted(edges[path[-1]])
            if start in nxt:
                cycle = path + [start]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
                break
            for m in nxt:
                if m not in visited:
                    visited.add(m)
                    paths.append(path + [m])
    return found


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1]
    edges = graph(root)
    found = cycles(edges)
    shown = set(edges) if "--all" in argv else {m for c in found for m in c} | ({"gentool.train", "gentool.hooks"} & set(edges))
    for name in sorted(shown):
        print(f"{name} -> {', '.join(sorted(edges[name])) or '(nothing in gentool)'}")
    print(f"\n{len(found)} import cycle(s)" + (":" if found else ""))
    for cycle in found:
        print("  " + " -> ".join(cycle))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
