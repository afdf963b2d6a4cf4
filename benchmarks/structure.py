"""Structure report: how the project's modules import each other, and how large they are.

    python -m benchmarks.structure                  # this checkout
    python -m benchmarks.structure --root /other/checkout

For each package (``eignn_jax``, ``experiments``) prints its number of modules, the
longest chain of imports between project modules that starts in it, its import cycles
and its 5 largest files by line count. Imports are read from the source with ``ast``,
nothing is imported, and are counted two ways: those that run when a module is imported
(module level, class bodies included) and, in addition, those inside functions, which run
only when the function is called. An import ``from a import b`` counts as an import of
module ``a.b`` when that is a module, else of ``a``; a package's ``__init__`` imported
on the way to one of its modules is not counted.
"""

from __future__ import annotations

import argparse
import ast
import pathlib

PACKAGES = ("eignn_jax", "experiments")


def module_files(root: pathlib.Path, packages=PACKAGES) -> dict[str, pathlib.Path]:
    """Dotted module name → source file, for every ``.py`` file of ``packages`` under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(name: str, modules: dict) -> str | None:
    """The longest prefix of dotted ``name`` that is a project module, or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def imports(module: str, path: pathlib.Path, modules: dict) -> dict[str, set[str]]:
    """{'module': project modules imported at module level, 'function': those imported
    only inside functions} by ``module``."""
    found = {"module": set(), "function": set()}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, level: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function")
                continue
            targets = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:   # relative: from the package, up level − 1 packages
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in child.names]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != module:
                    found[level].add(resolved)
            visit(child, level)

    visit(ast.parse(path.read_text(), str(path)), "module")
    found["function"] -= found["module"]
    return found


def longest_chain(graph: dict[str, set[str]], starts) -> list[str]:
    """The longest import chain without repeated modules starting at one of ``starts``."""
    best: list[str] = []

    def walk(chain: list[str]) -> None:
        nonlocal best
        if len(chain) > len(best):
            best = list(chain)
        for nxt in sorted(graph.get(chain[-1], ())):
            if nxt not in chain:
                chain.append(nxt)
                walk(chain)
                chain.pop()

    for start in sorted(starts):
        walk([start])
    return best


def shortest_chain(graph: dict[str, set[str]], source: str, target: str) -> list[str] | None:
    """The shortest import chain source → … → target of at least one import, or None."""
    parents: dict[str, str] = {}
    frontier = [source]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt == target:
                    chain = [node]
                    while chain[0] != source:
                        chain.insert(0, parents[chain[0]])
                    return chain + [target]
                if nxt not in parents and nxt != source:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles covering every module that is on one: for each such module not on a
    cycle found before, the shortest cycle through it."""
    found, covered = [], set()
    for start in sorted(graph):
        if start not in covered:
            cycle = shortest_chain(graph, start, start)
            if cycle is not None:
                covered.update(cycle)
                found.append(cycle)
    return found


def report(root: pathlib.Path) -> str:
    modules = module_files(root)
    found = {name: imports(name, path, modules) for name, path in modules.items()}
    graphs = {
        "module-level imports": {name: f["module"] for name, f in found.items()},
        "module- and function-level imports": {name: f["module"] | f["function"] for name, f in found.items()},
    }
    lines = [f"root {root.resolve()}"]
    for package in PACKAGES:
        own = {name for name in modules if name == package or name.startswith(package + ".")}
        sizes = sorted(((len(modules[name].read_text().splitlines()), name) for name in own), reverse=True)
        lines.append(f"\n{package}: {len(own)} modules, {sum(n for n, _ in sizes)} lines")
        for label, graph in graphs.items():
            chain = longest_chain(graph, own)
            lines.append(f"  {label}: longest chain {len(chain) - 1} imports: {' → '.join(chain)}")
            loops = [loop for loop in cycles(graph) if own & set(loop)]
            lines.append(f"    cycles: {len(loops) or 'none'}")
            lines += [f"      {' → '.join(loop)}" for loop in loops]
        lines.append("  largest files:")
        lines += [f"    {n:6d}  {modules[name].relative_to(root)}" for n, name in sizes[:5]]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[1],
                        help="repository root holding the packages (default: this checkout)")
    print(report(parser.parse_args(argv).root))


if __name__ == "__main__":
    main()
