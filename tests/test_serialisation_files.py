"""Leaf files on disk: Equinox's path rule, atomic writes, errors worded as Equinox's."""

from __future__ import annotations

import io
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import ecliptic
from ecliptic import CheckpointError

NAMES = ["a", "b.eqx", "c.npy", "d.eqx.bak", ".hidden", "g.txt", "i.EQX", "e."]


def _written_names(save, directory: pathlib.Path, as_path: bool) -> list[str]:
    directory.mkdir()
    for name in NAMES:
        target = directory / name
        save(target if as_path else str(target), [np.ones(2, np.float32)])
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "pathlib"])
def test_file_names_are_the_ones_equinox_writes(tmp_path, as_path):
    expected = sorted(
        ["a.eqx", "b.eqx", "c.npy", "d.eqx.bak", ".hidden.eqx", "g.txt", "i.EQX", "e..eqx"]
    )
    ours = _written_names(ecliptic.tree_serialise_leaves, tmp_path / "ours", as_path)
    assert ours == expected
    eqx = pytest.importorskip("equinox")
    assert _written_names(eqx.tree_serialise_leaves, tmp_path / "theirs", as_path) == ours


def test_loading_applies_the_same_rule(tmp_path):
    tree = [np.arange(3, dtype=np.float32)]
    ecliptic.tree_serialise_leaves(tmp_path / "model", tree)
    for given in (tmp_path / "model", str(tmp_path / "model"), tmp_path / "model.eqx"):
        out = ecliptic.tree_deserialise_leaves(given, [np.zeros(3, np.float32)])
        np.testing.assert_array_equal(out[0], tree[0])


def test_a_suffixless_file_on_disk_gets_a_hint(tmp_path):
    raw = tmp_path / "raw"
    with open(raw, "wb") as f:  # a file object is written exactly where it is opened
        ecliptic.tree_serialise_leaves(f, [np.ones(1)])
    with pytest.raises(FileNotFoundError, match=r"raw\.eqx.*'\.eqx' appended.*itself exists"):
        ecliptic.tree_deserialise_leaves(raw, [np.ones(1)])
    with open(raw, "rb") as f:
        np.testing.assert_array_equal(ecliptic.tree_deserialise_leaves(f, [np.zeros(1)])[0], 1)


def test_missing_directory_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cannot open '.*nope.*x\.eqx'.*does not exist"):
        ecliptic.tree_serialise_leaves(tmp_path / "nope" / "x", [np.ones(1)])
    assert not (tmp_path / "nope").exists()


def test_a_write_failing_half_way_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.eqx"
    old = [np.arange(4, dtype=np.float32), np.ones(3, np.int32)]
    ecliptic.tree_serialise_leaves(path, old)
    before = path.read_bytes()

    def fail_on_second_leaf(error):
        def spec(f, leaf):
            if leaf.dtype == np.int32:
                raise error  # after the first leaf was written
            ecliptic.default_serialise_filter_spec(f, leaf)

        return spec

    new = [np.zeros(4, np.float32), np.zeros(3, np.int32)]
    with pytest.raises(CheckpointError, match="disk unplugged; the previous file.*unchanged"):
        ecliptic.tree_serialise_leaves(
            path, new, filter_spec=fail_on_second_leaf(OSError("disk unplugged"))
        )
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.eqx"]  # no temporary file left behind
    with pytest.raises(KeyError, match="mine"):
        ecliptic.tree_serialise_leaves(path, new, filter_spec=fail_on_second_leaf(KeyError("mine")))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.eqx"]
    with pytest.raises(CheckpointError, match="64 bits"):
        ecliptic.tree_serialise_leaves(path, [np.zeros(4, np.float32), 2**70])
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.eqx"]


def test_a_killed_writer_leaves_the_previous_file_loadable(tmp_path):
    path = tmp_path / "model.eqx"
    old = [np.full(1000, 3.0, np.float32), np.arange(5)]
    ecliptic.tree_serialise_leaves(path, old)
    script = textwrap.dedent(
        f"""
        import sys, time
        import numpy as np
        import ecliptic

        def stall_after_first(f, leaf):
            ecliptic.default_serialise_filter_spec(f, leaf)
            f.flush()
            print("first leaf written", flush=True)
            time.sleep(60)

        tree = [np.zeros(1000, np.float32), np.zeros(5, np.int64)]
        ecliptic.tree_serialise_leaves({str(path)!r}, tree, filter_spec=stall_after_first)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        line = child.stdout.readline()  # pyright: ignore[reportOptionalMemberAccess]
        assert line.strip() == b"first leaf written", child.stderr.read()  # pyright: ignore
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    like = [np.zeros(1000, np.float32), np.zeros(5, np.int64)]
    loaded = ecliptic.tree_deserialise_leaves(path, like)
    np.testing.assert_array_equal(loaded[0], old[0])
    np.testing.assert_array_equal(loaded[1], old[1])


def test_a_safetensors_checkpoint_is_pointed_to_load(tmp_path):
    tree = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    path = tmp_path / "model.safetensors"
    ecliptic.save(path, tree)
    message = r"safetensors checkpoint.*reads Equinox leaf files.*ecliptic\.load"
    with pytest.raises(CheckpointError, match=message):
        ecliptic.tree_deserialise_leaves(path, tree)
    with open(path, "rb") as f, pytest.raises(CheckpointError, match=message):
        ecliptic.tree_deserialise_leaves(f, tree)
    # A leaf file, even one of zero leaves, is not mistaken for one.
    empty = tmp_path / "empty.eqx"
    ecliptic.tree_serialise_leaves(empty, ["not an array"])
    assert ecliptic.tree_deserialise_leaves(empty, ["x"]) == ["x"]


def _error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 (the error itself is under test)
        return e
    raise AssertionError("no error raised")


@pytest.mark.parametrize(
    "like",
    [
        (np.ones(1, np.int32), {"a": np.ones(1, np.int32), "b": np.ones(1, np.int32)}),
        (np.ones(1, np.int32), {"a": np.ones(1, np.float32)}),
        (np.ones(1, np.int32), {"a": np.ones((2,), np.int32)}),
    ],
    ids=["like-has-more-leaves", "dtype-changed", "shape-changed"],
)
def test_leaf_errors_keep_equinox_wording_and_type(like):
    eqx = pytest.importorskip("equinox")
    saved = (np.ones(1, np.int32), {"a": np.ones(1, np.int32)})
    theirs, ours = io.BytesIO(), io.BytesIO()
    eqx.tree_serialise_leaves(theirs, saved)
    ecliptic.tree_serialise_leaves(ours, saved)
    assert ours.getvalue() == theirs.getvalue()
    theirs.seek(0)
    ours.seek(0)
    their_error = _error(lambda: eqx.tree_deserialise_leaves(theirs, like))
    our_error = _error(lambda: ecliptic.tree_deserialise_leaves(ours, like))
    assert isinstance(their_error, RuntimeError)
    assert isinstance(our_error, RuntimeError) and isinstance(our_error, CheckpointError)
    assert str(their_error) in str(our_error)
    assert str(our_error).startswith("1.")  # ours names the leaf (1.a or 1.b) first
