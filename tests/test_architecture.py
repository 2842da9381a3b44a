"""The package's layering (docs/architecture.md): a module imports only from its own layer
or lower ones, and no private name (`_x`) is imported from another module. The rule is
read from the source, so a new file must be given a layer here before it can land."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ecliptic"

# Lowest first. A module's layer is the first prefix that matches its dotted name.
LAYERS = [
    (
        "ground",
        ["_version", "_messages", "_checks", "_filters", "_paths", "_exceptions", "_caches"],
    ),
    ("trees", ["_tree", "_tree_equal", "_pretty_print", "_update"]),
    ("modules", ["_module"]),
    (
        "transformations",
        [
            "_split",
            "_call_memo",
            "_jit",
            "_ad",
            "_ad_utils",
            "_custom_ad",
            "_closure_convert",
            "_vmap",
            "_pmap",
            "_eval_shape",
            "_make_jaxpr",
            "_callback",
            "_remat",
            "_legacy_api",
        ],
    ),
    ("runtime checks", ["_errors", "_enum"]),  # Enumeration.error_if
    ("layers", ["nn"]),
    (
        "services",
        [
            "_io",
            "_sharding",
            "sharding",
            "_distributed",
            "distributed",
            "_summary",
            "_model_transforms",
        ],
    ),
    ("tools", ["debug"]),
    ("face", ["__init__"]),
]


def layer_of(module: str) -> int:
    """The layer index of a module given relative to the package (`nn._linear`)."""
    head = module.split(".")[0]
    for index, (_, prefixes) in enumerate(LAYERS):
        if head in prefixes:
            return index
    raise AssertionError(
        f"ecliptic.{module} has no layer: add it to LAYERS in tests/test_architecture.py "
        "and to docs/architecture.md"
    )


def imports(path: pathlib.Path, root: pathlib.Path = PACKAGE):
    """(importer, imported module, names) for every ecliptic import in one file, with
    module names relative to the package (`nn._linear`; the package itself is `__init__`)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    module = ".".join(parts[:-1] if is_package else parts) or "__init__"
    package = parts[:-1] if is_package else parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module is not None and node.module.startswith("ecliptic"):
                target = node.module.removeprefix("ecliptic").lstrip(".")
            else:
                continue
            yield module, target, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ecliptic."):
                    yield module, alias.name.removeprefix("ecliptic."), []


def _is_module(root: pathlib.Path, package: str, name: str) -> bool:
    folder = root.joinpath(*package.split(".")) if package else root
    return (folder / f"{name}.py").exists() or (folder / name / "__init__.py").exists()


def violations(root: pathlib.Path = PACKAGE) -> list[str]:
    """Every import of a higher layer and every private name crossing modules."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for importer, target, names in imports(path, root):
            private = [
                n
                for n in names
                if n.startswith("_")
                and not n.startswith("__")
                and not _is_module(root, target, n)  # `from . import _x` imports a module
            ]
            if private:
                found.append(f"ecliptic.{importer} imports private {private} from {target}")
            if importer == "__init__":
                continue
            for t in [target] if target else names:  # `from . import nn` names modules
                if layer_of(t) > layer_of(importer):
                    found.append(
                        f"ecliptic.{importer} ({LAYERS[layer_of(importer)][0]}) imports "
                        f"ecliptic.{t} ({LAYERS[layer_of(t)][0]}), a higher layer"
                    )
    return found


def test_lower_layers_never_import_higher_ones_nor_private_names():
    assert violations() == []


def test_the_rule_catches_violations(tmp_path):
    root = tmp_path / "ecliptic"
    root.mkdir()
    (root / "_tree.py").write_text("from .nn import Linear\nfrom ._jit import _secret\n")
    found = violations(root)
    assert len(found) == 3  # trees -> layers, trees -> transformations, a private name
    assert any("imports private ['_secret']" in f for f in found)
    assert any("ecliptic._tree (trees) imports ecliptic.nn (layers)" in f for f in found)


def test_a_module_without_a_layer_is_reported():
    with pytest.raises(AssertionError, match="has no layer"):
        layer_of("_brand_new_module")
