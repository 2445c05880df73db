"""The package's module graph: imports flow one way (no cycles), no module imports a package
module inside a function, metrics is a leaf, and figures never import the evaluation."""
import ast
from pathlib import Path

import ginr_common

PKG = Path(ginr_common.__file__).parent


def module_name(path):
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports():
    """{module: ({top-level package imports}, [function-local package imports])}"""
    out = {}
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top, local = set(), []

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("ginr_common"):
                    names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
                    found = {n for n in names if (PKG.parent / n.replace(".", "/")).with_suffix(".py").exists()
                             or (PKG.parent / n.replace(".", "/") / "__init__.py").exists()}
                    (local.extend(found) if inner else top.update(found))
                elif isinstance(child, ast.Import) and any(a.name.startswith("ginr_common") for a in child.names):
                    found = {a.name for a in child.names if a.name.startswith("ginr_common")}
                    (local.extend(found) if inner else top.update(found))
                visit(child, inner)

        visit(tree, False)
        out[module_name(path)] = (top, local)
    return out


# the wrappers of optional third-party back ends are imported when first used, so the package
# imports without numba's compilation or triton
OPTIONAL_BACKENDS = {"ginr_common", "ginr_common._scan_numba", "ginr_common._conv_numba", "ginr_common._scan_triton"}


def test_no_function_local_package_imports():
    local = {m: sorted(set(loc) - OPTIONAL_BACKENDS) for m, (_, loc) in imports().items()}
    local = {m: loc for m, loc in local.items() if loc}
    assert not local, f"package modules imported inside functions: {local}"


def test_no_import_cycles():
    graph = {m: {d for d in top if d != m} for m, (top, _) in imports().items()}
    # a package's __init__ re-exports its modules; the edges that matter are module -> module
    graph = {m: {d for d in deps if not m.startswith(d + ".") and d in graph} for m, deps in graph.items()}
    state = {}

    def dfs(m, path):
        state[m] = "open"
        for d in graph[m]:
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path + [m, d]))
            if d not in state:
                dfs(d, path + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            dfs(m, [])


def test_layering():
    graph = {m: top for m, (top, _) in imports().items()}
    assert not graph["ginr_common._io"], graph["ginr_common._io"]      # atomic writes: below everything
    for leaf in ("ginr_common.metrics", "ginr_common.baselines", "ginr_common.inputs", "ginr_common.fourier",
                 "ginr_common.tokens", "ginr_common.data"):
        below = {"ginr_common._io"} | ({"ginr_common.inputs"} if leaf == "ginr_common.data" else set())
        assert not graph[leaf] - below, f"{leaf} should be a leaf, imports {graph[leaf]}"
    assert graph["ginr_common.viz"] <= {"ginr_common.metrics", "ginr_common.fourier", "ginr_common.tokens"}
    assert "ginr_common.flow" not in graph["ginr_common.model"]
    for m, deps in graph.items():   # nothing below the training loop imports it or the evaluation CLI
        if m not in ("ginr_common.train", "ginr_common.evaluate", "ginr_common.release", "ginr_common.notebook"):
            assert not deps & {"ginr_common.train", "ginr_common.evaluate"}, (m, deps)
    for m, deps in graph.items():   # the release builder is the top: nothing imports it
        assert "ginr_common.release" not in deps, m
