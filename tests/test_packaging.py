"""Release check: `python -m build` makes an sdist and a wheel that install and import in
a fresh virtual environment.

Runs offline: the build uses the backend installed in this environment
(`--no-isolation`; the `test` extra installs setuptools and build), and the fresh
venv gets only the wheel (`--no-index --no-deps`); its third-party dependencies (JAX,
NumPy, ...) are borrowed from this environment through a `.pth` file, the way
`--system-site-packages` would. The sources are copied to a temporary directory first,
so the build neither writes into the checkout nor picks up stale files from an old
`build/` folder. About 20-40 s.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.packaging

_NEEDED = ("build", "setuptools")


def _version() -> str:
    text = (ROOT / "ecliptic" / "_version.py").read_text()
    match = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
    assert match, "ecliptic/_version.py must define __version__ = '...'"
    return match.group(1)


def _run(cmd, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    missing = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"needs {missing} (pip install -e '.[test]'; `make test` installs them)")
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "ecliptic", source / "ecliptic", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)])
    return out


def test_wheel_contents(dist):
    version = _version()
    wheels = list(dist.glob("*.whl"))
    assert [w.name for w in wheels] == [f"ecliptic-{version}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"ecliptic-{version}.dist-info/METADATA").decode()
    for required in (
        "ecliptic/__init__.py",
        "ecliptic/py.typed",
        "ecliptic/_version.py",
        "ecliptic/nn/__init__.py",
        "ecliptic/debug/__init__.py",
    ):
        assert required in names, f"{required} is missing from the wheel"
    assert all(n.startswith(("ecliptic/", f"ecliptic-{version}.dist-info/")) for n in names), (
        sorted(n for n in names if not n.startswith("ecliptic"))
    )
    assert f"Version: {version}" in metadata
    assert "Requires-Dist: jax" in metadata
    assert "License-Expression: Apache-2.0" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # The README is the long description.
    assert "make demo" in metadata

    sdists = list(dist.glob("*.tar.gz"))
    assert [s.name for s in sdists] == [f"ecliptic-{version}.tar.gz"]
    with tarfile.open(sdists[0]) as sdist:
        members = {m.name.split("/", 1)[-1] for m in sdist.getmembers()}
    assert {"pyproject.toml", "README.md", "ecliptic/py.typed"} <= members


def test_wheel_installs_and_imports_in_fresh_venv(dist, tmp_path):
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # Install only the wheel, from the local file: no index, no dependencies.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            str(wheel),
        ]
    )
    # Borrow the dependencies from this environment. Paths listed in a .pth file are not
    # themselves site directories, so the editable install of ecliptic there (its own
    # .pth hook) is not activated: `import ecliptic` must find the wheel's copy.
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    borrowed = [p for p in site.getsitepackages() if os.path.isdir(p)]
    (pathlib.Path(purelib.stdout.strip()) / "_borrowed_deps.pth").write_text(
        "\n".join(borrowed) + "\n"
    )
    check = (
        "import importlib.metadata, pathlib, jax, ecliptic\n"
        "print(ecliptic.__file__)\n"
        "assert importlib.metadata.version('ecliptic') == ecliptic.__version__\n"
        "assert (pathlib.Path(ecliptic.__file__).parent / 'py.typed').is_file()\n"
        "layer = ecliptic.nn.Linear(3, 2, key=jax.random.key(0))\n"
        "assert layer(jax.numpy.ones(3)).shape == (2,)\n"
        "print(ecliptic.__version__)\n"
    )
    result = _run([str(python), "-c", check], cwd=tmp_path)  # cwd: not the checkout
    location, version = result.stdout.split()[-2:]
    assert pathlib.Path(location).resolve().is_relative_to(venv.resolve()), location
    assert version == _version()
