"""The benchmark scripts stay importable and runnable: each one's tiny "smoke" mode runs
here (a call or two per contender, tiny models), and the report writer works."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_DIR = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS_DIR)

import _timing  # noqa: E402
import run_all  # noqa: E402


@pytest.mark.parametrize("name", run_all.BENCHMARKS)
def test_benchmark_smoke(name):
    rows = run_all.run([name], smoke=True)
    assert rows, name
    groups = {}
    for row in rows:
        assert isinstance(row, _timing.Row)
        assert row.value >= 0 and row.unit
        groups.setdefault(row.group, []).append(row)
    for group, members in groups.items():
        # every benchmark group has its baseline row (ratio None); rows compared with it
        # exist whenever the group has contenders besides the baseline (Equinox and Flax
        # are optional: a fresh `make test` venv does not have them)
        assert any(r.ratio is None for r in members), group
        if len(members) > 1:
            assert any(r.ratio is not None for r in members), group


def test_benchmarks_run_without_the_optional_competitors():
    """As in CI's fresh venv: Equinox and Flax not importable."""
    code = (
        "import sys; sys.modules['equinox'] = None; sys.modules['flax'] = None;"
        "sys.modules['flax.nnx'] = None; sys.path.insert(0, 'benchmarks');"
        "import run_all; rows = run_all.run(['module_machinery', 'dispatch'], smoke=True);"
        "assert rows and not any('equinox' in r.name or 'flax' in r.name "
        "for r in rows), rows"
    )
    root = pathlib.Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=300)


def test_interleaved_timing_and_report(tmp_path):
    calls = {"a": 0, "b": 0}

    def bump(name):
        calls[name] += 1
        return name

    stats = _timing.interleaved(
        {"a": lambda: bump("a"), "b": lambda: bump("b")}, number=3, rounds=4, warmup=1
    )
    assert set(stats) == {"a", "b"} and all(len(s.samples) == 4 for s in stats.values())
    assert all(s.min <= s.median for s in stats.values())
    rows = _timing.rows_from_stats("group", stats, "a", goals={"b": "<=1x"})
    assert rows[0].ratio is None and rows[1].ratio == pytest.approx(
        stats["b"].median / stats["a"].median
    )
    path = tmp_path / "RESULTS.md"
    run_all.write_results(rows, 1.0, str(path))
    text = path.read_text()
    assert "| group | b |" in text and "Machine:" in text and "baseline" in text


def test_run_all_rejects_unknown_benchmark_names():
    with pytest.raises(SystemExit, match="unknown benchmarks"):
        run_all.main(["--only", "nonsense", "--smoke"])
