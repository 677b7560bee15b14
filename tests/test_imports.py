"""Imports only go down: the import graph of byol_keras and training has no circle.

Every `import` and `from ... import` is read from the source (at any depth: an import inside a function
to dodge a circle is still a circle) and resolved to a module of the two packages; a package's own
`__init__`, which Python runs before any of its modules, is not counted as an import of each module.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("byol_keras", "training")


def modules(root=ROOT, packages=PACKAGES):
    """`{dotted module name: file}` for every .py file of `packages` (a package is its `__init__.py`)."""
    found = {}
    for package in packages:
        for folder, _, files in os.walk(os.path.join(root, package)):
            for file in files:
                if not file.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(folder, file), root)[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = os.path.join(folder, file)
    return found


def _known(name, known):
    """The longest prefix of dotted `name` that is one of `known`, or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def imports(name, source, known, is_package=False):
    """The modules of `known` that module `name` (source text `source`; a package's `__init__` when
    `is_package`) imports."""
    targets = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(_known(alias.name, known) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                # `from package import module` imports the module; `from module import name` the module.
                targets.add(_known(f"{base}.{alias.name}", known) or _known(base, known))
    targets.discard(None)
    targets.discard(name)
    return targets


def import_graph(root=ROOT, packages=PACKAGES):
    """`{module: set of modules it imports}` over `packages`."""
    found = modules(root, packages)
    graph = {}
    for name, path in found.items():
        with open(path, encoding="utf-8") as f:
            graph[name] = imports(name, f.read(), found, is_package=path.endswith("__init__.py"))
    return graph


def cycles(graph):
    """The strongly connected components of `graph` with more than one module (each a circle), sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def test_cycles_finds_a_circle_and_only_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []


def test_imports_resolve_modules_inside_functions_and_from_packages():
    known = {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"}
    source = (
        "import os\nfrom pkg import a\nfrom pkg.sub import c, helper\nfrom pkg.b import thing\n"
        "def f():\n    import pkg.sub.c\n    from pkg import sub\n"
    )
    assert imports("pkg.x", source, known) == {"pkg.a", "pkg.sub.c", "pkg.sub", "pkg.b"}
    assert imports("pkg.sub.c", "from . import helper\nfrom .. import a\n", known) == {"pkg.sub", "pkg.a"}
    assert imports("pkg.sub", "from . import c\n", known, is_package=True) == {"pkg.sub.c"}


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert {"byol_keras.byol", "byol_keras.cli.pretrain", "training.pretrain"} <= set(graph)
    assert "byol_keras.encoders" in graph["byol_keras.byol"]
    assert cycles(graph) == []
