"""Smoke test of `make demo`'s script: one short epoch on a subset of the digits.

It checks the plumbing (summary, progress, checkpoint save + reload, both PNGs, the final
accuracy line, `--help`), not the accuracy: the full run's >= 97% is `make demo`'s job.
"""

import importlib.util
import pathlib
import sys

import pytest

pytest.importorskip("sklearn", reason="the demo needs the `examples` extra (scikit-learn)")
pytest.importorskip("matplotlib", reason="the demo needs the `examples` extra (matplotlib)")
pytest.importorskip("tqdm", reason="the demo needs the `examples` extra (tqdm)")

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "examples" / "demo_digits.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("example_demo_digits", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through it
    spec.loader.exec_module(module)
    return module


def test_demo_smoke_run(demo, tmp_path, capsys):
    argv = ["--epochs", "2", "--train-size", "192", "--batch-size", "64", "--seed", "3"]
    result = demo.main([*argv, "--out", str(tmp_path / "a"), "--no-progress"])
    out = capsys.readouterr().out
    # The summary comes first and names the layers.
    assert out.index("BatchNorm") < out.index("epoch 1")
    assert "Conv2d" in out and "Linear" in out and "Trainable" in out
    # The last line is the accuracy line, and the reloaded checkpoint scores the same.
    last = out.strip().splitlines()[-1]
    assert last.startswith("test accuracy ") and "(reloaded checkpoint: " in last
    assert result["reloaded_accuracy"] == result["accuracy"]
    assert len(result["history"]["test_acc"]) == 2
    for name in ("training.png", "predictions.png"):
        data = (tmp_path / "a" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert result["checkpoint"].stat().st_size > 50_000  # ~26k float32 parameters

    # Deterministic for a fixed seed: a second run gives the same curves.
    again = demo.main([*argv, "--out", str(tmp_path / "b"), "--no-progress"])
    assert again["history"] == result["history"]


def test_demo_help_documents_options(demo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--epochs", "--batch-size", "--seed", "--out"):
        assert option in text
