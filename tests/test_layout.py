"""The package's layers point down only: data -> models -> training -> evaluation -> search -> report,
then the interfaces (web, cli). A module may import from its own layer or those below it, never
from above; the fast path imports nothing of mnistlab but the leaf modules errors, paths, system and streams."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mnistlab"

# Lowest first. Each module's layer is that of its longest matching prefix.
LAYERS = [
    ("mnistlab.errors", "mnistlab.atomic", "mnistlab.paths", "mnistlab.system", "mnistlab.streams",
     "mnistlab.backend"),
    ("mnistlab.data",),
    ("mnistlab.models", "mnistlab.optimizers", "mnistlab.params", "mnistlab.inference"),
    ("mnistlab.training", "mnistlab.folders"),
    ("mnistlab.evaluation",),
    ("mnistlab.search",),
    ("mnistlab.report",),
    ("mnistlab.web",),
    ("mnistlab.cli",),
    ("mnistlab",),  # the package's own __init__ / __main__: the public API, above everything
]
FASTPATH = "mnistlab.training.fastpath"
FASTPATH_MAY_IMPORT = ("mnistlab.errors", "mnistlab.paths", "mnistlab.system", "mnistlab.streams", FASTPATH)


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
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if target != "mnistlab":  # `from mnistlab import __version__` needs no layer; its modules do
                found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "mnistlab" or name.startswith("mnistlab.")}


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


@pytest.mark.parametrize("path", [p for p in MODULES if module_name(p).startswith(FASTPATH)],
                         ids=lambda p: module_name(p))
def test_fastpath_depends_only_on_leaf_modules(path):
    outside = sorted(target for target in imports(path) if is_module(target)
                     and not any(target == a or target.startswith(a + ".") for a in FASTPATH_MAY_IMPORT))
    assert outside == []


def test_the_checker_sees_upward_and_relative_imports():
    source = "from mnistlab.report.plots import learning_curve\n" \
             "def f():\n    from ..evaluation import evaluate\n    from . import checkpoint\n"
    found = imports_in(source, "mnistlab.training")
    assert {"mnistlab.report.plots", "mnistlab.evaluation", "mnistlab.training.checkpoint"} <= found
    assert upward_imports("mnistlab.training.loop", found) == ["mnistlab.evaluation", "mnistlab.report.plots"]
