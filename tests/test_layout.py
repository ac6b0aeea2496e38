"""The package's layers point down only: the bottom (errors, paths, system, streams, backend, storage and
the plain-data leaves catalog, constraints, text) -> data -> models -> training -> search -> report, then
the interfaces (web, cli). A module may import from its own layer or those below it, never from above;
the fast path imports nothing of mnistlab but the leaf modules errors, paths, system and streams, and
storage nothing but errors and backend; and no modules import each other round in a cycle, not even
from inside functions."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mnistlab"

# Lowest first. Each module's layer is that of its longest matching prefix.
LAYERS = [
    (
        "mnistlab.errors",
        "mnistlab.paths",
        "mnistlab.system",
        "mnistlab.streams",
        "mnistlab.backend",
        "mnistlab.storage",
        "mnistlab.catalog",
        "mnistlab.constraints",
        "mnistlab.text",
    ),
    ("mnistlab.data",),
    (
        "mnistlab.models",
        "mnistlab.optimizers",
        "mnistlab.params",
        "mnistlab.inference",
        "mnistlab.calibration",
        "mnistlab.explain",
        "mnistlab.export",
        "mnistlab.onnx_model",
    ),
    ("mnistlab.training",),
    ("mnistlab.search",),
    ("mnistlab.report",),
    ("mnistlab.web",),
    ("mnistlab.cli",),
    ("mnistlab",),  # the package's own __init__ / __main__: the public API, above everything
]
FASTPATH = "mnistlab.training.fastpath"
FASTPATH_MAY_IMPORT = ("mnistlab.errors", "mnistlab.paths", "mnistlab.system", "mnistlab.streams", FASTPATH)
STORAGE = "mnistlab.storage"
STORAGE_MAY_IMPORT = ("mnistlab.errors", "mnistlab.backend", STORAGE)


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path):
    """Every mnistlab module `path` imports, at module level or inside functions."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source, package):
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = absolute(node, package)
            if target != "mnistlab":  # `from mnistlab import __version__` needs no layer; its modules do
                found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "mnistlab" or name.startswith("mnistlab.")}


def absolute(node, package):
    """The module an ImportFrom node imports from, relative ones (`from . import x`) resolved in `package`."""
    if not node.level:
        return node.module
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def layer_of(name):
    best, level = "", None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, i
    return level


def is_module(name):
    parts = name.split(".")
    path = PACKAGE.parent.joinpath(*parts)
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert [module_name(p) for p in MODULES if layer_of(module_name(p)) is None] == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path):
    name = module_name(path)
    upward = upward_imports(name, imports(path))
    assert upward == [], f"{name} (layer {layer_of(name)}) imports from above: {upward}"


def upward_imports(name, targets):
    if name in ("mnistlab", "mnistlab.__main__"):
        return []
    return sorted(t for t in targets if is_module(t) and layer_of(t) > layer_of(name))


def outside(path, allowed):
    return sorted(
        target
        for target in imports(path)
        if is_module(target) and not any(target == a or target.startswith(a + ".") for a in allowed)
    )


@pytest.mark.parametrize(
    "path", [p for p in MODULES if module_name(p).startswith(FASTPATH)], ids=lambda p: module_name(p)
)
def test_fastpath_depends_only_on_leaf_modules(path):
    assert outside(path, FASTPATH_MAY_IMPORT) == []


@pytest.mark.parametrize(
    "path", [p for p in MODULES if module_name(p).startswith(STORAGE)], ids=lambda p: module_name(p)
)
def test_storage_depends_only_on_errors_and_backend(path):
    """Folders hold plain data: what a configuration means is training's (TrainConfig.from_folder)."""
    assert outside(path, STORAGE_MAY_IMPORT) == []


def test_the_checker_sees_upward_and_relative_imports():
    source = (
        "from mnistlab.report.plots import learning_curve\n"
        "def f():\n    from ..search import grid\n    from . import checkpoint\n"
    )
    found = imports_in(source, "mnistlab.training")
    assert {"mnistlab.report.plots", "mnistlab.search.grid", "mnistlab.training.checkpoint"} <= found
    assert upward_imports("mnistlab.training.loop", found) == [
        "mnistlab.report.plots",
        "mnistlab.search",
        "mnistlab.search.grid",
    ]


def dependencies(path):
    """The mnistlab modules `path` needs, at module level or inside functions. Unlike imports(),
    `from package import submodule` needs the submodule, not the package's __init__ (which Python
    runs first anyway, as the submodule's parent); and the top package `mnistlab`, every module's
    parent, is left out."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    needed = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            needed |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = absolute(node, package)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                needed.add(sub if is_module(sub) else target)
    return {t for t in needed if t and t.startswith("mnistlab.") and is_module(t) and t != name}


def import_cycles(graph):
    """Each cycle of `graph` ({module: modules it needs}) once, as a list of modules, the first one
    returning to itself (depth-first: a back edge closes a cycle)."""
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for after in sorted(graph.get(node, ())):
            if state.get(after) == "open":
                cycles.append(stack[stack.index(after) :] + [after])
            elif after not in state:
                visit(after)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle():
    graph = {module_name(path): dependencies(path) for path in MODULES}
    assert import_cycles(graph) == []


def test_the_cycle_finder_sees_cycles_and_function_level_imports():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    # models checks its arguments through params; params needs neither models
    # nor optimizers: their names are catalog's
    assert {"mnistlab.params", "mnistlab.catalog"} <= dependencies(PACKAGE / "models.py")
    assert {"mnistlab.data.registry", "mnistlab.catalog"} <= dependencies(PACKAGE / "params.py")
    assert not {"mnistlab.models", "mnistlab.optimizers"} & dependencies(PACKAGE / "params.py")
    # `from mnistlab.training import checkpoint` needs the submodule, not the package
    assert "mnistlab.training" not in dependencies(PACKAGE / "training" / "loop.py")


def imported_names(path):
    """({name: module} imported at the top level, {name: module} imported inside its top-level
    `if TYPE_CHECKING:` block) of a module: `from module import name` statements."""
    at_run_time, type_checking = {}, {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            at_run_time |= {alias.asname or alias.name: node.module for alias in node.names}
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.unparse(statement)
                type_checking |= {alias.asname or alias.name: statement.module for alias in statement.names}
    return at_run_time, type_checking


@pytest.mark.parametrize("package", ["mnistlab", "mnistlab.training"])
def test_the_lazily_loaded_names_are_visible_to_type_checkers(package):
    """A package that loads names on first use (a module __getattr__) imports each under TYPE_CHECKING,
    so that pyright and editors see them: with the names it imports at run time, the names of
    __all__ (a literal list, which type checkers read), and mnistlab's API table, whose objects
    they are."""
    import importlib

    module = importlib.import_module(package)
    path = PACKAGE.parent.joinpath(*package.split(".")) / "__init__.py"
    at_run_time, type_checking = imported_names(path)
    assert not at_run_time.keys() & type_checking.keys()
    assert sorted(type_checking.keys() | (at_run_time.keys() & set(module.__all__))) == module.__all__
    assert all(
        isinstance(node.value, ast.List)
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"
    )
    if hasattr(module, "API"):
        assert set(module.API) == set(module.__all__)
    api = getattr(module, "API", dict.fromkeys(type_checking, package))
    for name, source in type_checking.items():
        loaded = getattr(importlib.import_module(api[name]), name)  # what __getattr__ returns
        assert getattr(importlib.import_module(source), name) is loaded, name
