"""The documentation: the site builds in strict mode, the API reference covers every
public name, and the code on the narrative pages runs.

Code blocks fenced as ```python are executed, in order, one namespace per page (so a
page reads top to bottom as one session). A block preceded by the line
`<!-- no-test -->` is shown but not run (shell commands, PyTorch or Flax code).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Pages whose python blocks are executed. (debugging.md and parallelism.md are tested by
# their own authors' tests; the API pages hold only reference directives.)
RUNNABLE_PAGES = [
    "index.md",
    "getting-started.md",
    "callable-pytrees.md",
    "filtered-transformations.md",
    "from-pytorch.md",
    "from-equinox.md",
    "from-flax.md",
    "faq.md",
    "api/modules.md",
    "api/filters.md",
    "api/transformations.md",
    "api/tree.md",
    "api/nn.md",
    "api/stateful.md",
    "api/serialisation.md",
    "api/errors.md",
    "api/sharding.md",
    "api/mixed-precision.md",
    "api/lora.md",
    "api/intermediates.md",
]

_FENCE = re.compile(r"^\s*```(\S*)\s*$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every ```python block not marked `<!-- no-test -->`."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, j = i, i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        previous = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        if match.group(1) == "python" and previous != "<!-- no-test -->":
            blocks.append((start + 2, textwrap.dedent("\n".join(lines[start + 1 : j]))))
        i = j + 1
    return blocks


def _run_blocks(path: pathlib.Path, tmp_path, monkeypatch) -> None:
    label = str(path.relative_to(ROOT))
    text = path.read_text()
    monkeypatch.chdir(tmp_path)  # pages that write files write them here
    # Classes defined in the blocks need a real module (dataclasses look up annotations).
    name = "docs_" + re.sub(r"\W", "_", label)
    module = type(sys)(name)
    monkeypatch.setitem(sys.modules, name, module)
    for line, source in python_blocks(text):
        # dont_inherit: run the block as a user would, not under this file's __future__ imports.
        code = compile(source, f"{label}:{line}", "exec", dont_inherit=True)
        try:
            exec(code, module.__dict__)
        except Exception as e:  # pragma: no cover - the message is what matters
            raise AssertionError(f"the code block at {label}:{line} failed: {e!r}") from e


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_code_runs(page, tmp_path, monkeypatch):
    _run_blocks(DOCS / page, tmp_path, monkeypatch)


def test_readme_code_runs(tmp_path, monkeypatch):
    _run_blocks(ROOT / "README.md", tmp_path, monkeypatch)
    assert (tmp_path / "sine.safetensors").is_file()


def _documented_names() -> set[str]:
    names = set()
    for page in DOCS.rglob("*.md"):
        names.update(re.findall(r"^::: (ecliptic[\w.]*)\s*$", page.read_text(), re.M))
    return names


def test_api_reference_covers_every_public_name():
    import ecliptic

    documented = _documented_names()
    expected = set()
    for module in (ecliptic, ecliptic.nn, ecliptic.debug, ecliptic.sharding):
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type(sys)) or name.startswith("__"):
                continue  # submodules and __version__
            qualified = f"{module.__name__}.{name}"
            if module is ecliptic.sharding and hasattr(ecliptic, name):
                qualified = f"ecliptic.{name}"  # documented once, at the top level
            expected.add(qualified)
    missing = sorted(expected - documented)
    assert not missing, (
        "public names without an API reference entry (add `::: name` to the right page "
        f"in docs/api/): {missing}"
    )
    stale = sorted(name for name in documented if name.count(".") >= 1 and not _exists(name))
    assert not stale, f"docs/api/ documents names that do not exist: {stale}"


def _exists(dotted: str) -> bool:
    import ecliptic

    obj = ecliptic
    for part in dotted.split(".")[1:]:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def test_nav_lists_every_page():
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs (the docs extra)")

    class _Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may use !!python/name tags and the like; ignore unknown tags.
    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from pages(value)
            else:
                yield value

    listed = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk - listed == set(), f"pages missing from mkdocs.yml's nav: {on_disk - listed}"
    assert listed - on_disk == set(), f"nav entries with no page: {listed - on_disk}"


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None
    or importlib.util.find_spec("mkdocstrings") is None
    or importlib.util.find_spec("material") is None,
    reason="mkdocs, mkdocs-material or mkdocstrings is not installed: pip install -e '.[docs]' "
    "(`make test` installs it)",
)
def test_docs_build_strict(tmp_path):
    """`mkdocs build --strict`: any broken link, missing page, bad reference or mkdocstrings
    warning fails the build."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    for page in ("index.html", "api/nn/index.html", "performance/index.html"):
        assert (tmp_path / page).is_file(), page
    api = (tmp_path / "api" / "transformations" / "index.html").read_text()
    assert "filter_jit" in api and "Arguments" in api  # docstrings were rendered
