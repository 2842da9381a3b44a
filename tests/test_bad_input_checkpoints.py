"""The bad-input catalogue: checkpoints (ecliptic.save/load and the leaf serialisation)
and state dicts. See bad_input_helpers.py for what each row asserts."""

# Each row passes a wrong type on purpose to check the error: argument types are not checked.
# pyright: reportArgumentType=false, reportCallIssue=false

from __future__ import annotations

import atexit
import functools
import io
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bad_input_helpers import check_misuse, misuse
from bad_input_layers import KEY, abstract, linear

import ecliptic as ec
from ecliptic import nn


@functools.cache
def workdir() -> pathlib.Path:
    path = pathlib.Path(tempfile.mkdtemp(prefix="ecliptic-bad-input-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def saved(kind: str) -> pathlib.Path:
    """A checkpoint of `linear()`: "safetensors" (ecliptic.save) or "eqx" (leaves)."""
    path = workdir() / f"linear.{kind}"
    if kind == "safetensors":
        ec.save(path, linear())
    else:
        ec.tree_serialise_leaves(path, linear())
    return path


def mlp() -> Any:
    return ec.filter_eval_shape(nn.MLP, 3, 4, 8, 1, key=KEY)


def damaged(kind: str, edit: Any) -> pathlib.Path:
    data = bytearray(saved(kind).read_bytes())
    path = workdir() / f"damaged-{len(os.listdir(workdir()))}.{kind}"
    path.write_bytes(bytes(edit(data)))
    return path


def flip_last_byte(data: bytearray) -> bytearray:
    data[-3] ^= 0xFF
    return data


def break_header(data: bytearray) -> bytearray:
    data[10:13] = b"#}!"
    return data


def foreign() -> pathlib.Path:
    """linear() written by safetensors itself: no ecliptic metadata, no checksums."""
    import safetensors.numpy

    path = workdir() / "foreign.safetensors"
    safetensors.numpy.save_file(ec.state_dict(linear()), str(path))
    return path


def version_zero(data: bytearray) -> bytes:
    """The checkpoint as an old format version "0" would be (header checksum redone)."""
    from ecliptic._io._safetensors import HEADER_HASH, header_digest

    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"]["ecliptic.version"] = "0"
    header["__metadata__"][HEADER_HASH] = header_digest(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + bytes(data[8 + n :])


def load(kind: str, like: Any = None, edit: Any = None) -> Any:
    def run() -> Any:
        path = saved(kind) if edit is None else damaged(kind, edit)
        target = abstract() if like is None else like()
        if kind == "safetensors":
            return ec.load(path, target)
        return ec.tree_deserialise_leaves(path, target)

    return run


MISSING = "no-such-dir/model.safetensors"
CHECKPOINT_CASES = [
    misuse(
        "save/missing-directory",
        lambda: ec.save(workdir() / MISSING, linear()),
        ec.CheckpointError,
        r"cannot save to '.*model\.safetensors': the directory "
        r"'.*no-such-dir' does not exist",
    ),
    misuse(
        "save/path-is-a-directory",
        lambda: ec.save(workdir(), linear()),
        ec.CheckpointError,
        r"cannot save to '.*': it is a directory",
    ),
    misuse(
        "save/metadata-not-str",
        lambda: ec.save(workdir() / "m.safetensors", linear(), metadata={"epoch": 1}),
        TypeError,
        r"save\(metadata=\.\.\.\) must be a dict\[str, str\]",
    ),
    misuse(
        "save/reserved-metadata-key",
        lambda: ec.save(workdir() / "m.safetensors", linear(), metadata={"ecliptic.version": "9"}),
        ValueError,
        r"save\(metadata=\.\.\.\): the keys \['ecliptic\.version'\] are reserved",
    ),
    misuse(
        "load/missing-file",
        lambda: ec.load(workdir() / "none.safetensors", linear()),
        ec.CheckpointError,
        r"cannot read '.*none\.safetensors': No such file",
    ),
    misuse(
        "load/wrong-architecture",
        load("safetensors", lambda: abstract(4, 3)),
        ec.CheckpointError,
        r"(?s)cannot load .* into `like`.*weight: expected "
        r"f32\[3,4\], file has f32\[4,3\]",
    ),
    misuse(
        "load/other-model-type",
        load("safetensors", lambda: mlp()),
        ec.CheckpointError,
        r"(?s)layers\.0\.weight: expected f32\[8,3\], not in the file",
    ),
    misuse(
        "load/dtype-mismatch",
        load("safetensors", lambda: abstract(dtype=jnp.float16)),
        ec.CheckpointError,
        r"(?s)weight: expected f16\[4,3\], file has f32\[4,3\]",
    ),
    misuse(
        "load/static-field-changed",
        load("safetensors", lambda: abstract(use_bias=False)),
        ec.CheckpointError,
        r"(?s)bias: in the file \(f32\[4\]\) but not in like.*"
        r"use_bias: file has True, like has False \(static\)",
    ),
    misuse(
        "load/truncated-file",
        load("safetensors", edit=lambda d: d[: len(d) - 10]),
        ec.CheckpointError,
        r"is not a valid safetensors file: the tensors need 64 bytes "
        r"of data, the file holds 54",
    ),
    misuse(
        "load/corrupted-header",
        load("safetensors", edit=break_header),
        ec.CheckpointError,
        r"is not a valid safetensors file",
    ),
    misuse(
        "load/corrupted-data",
        load("safetensors", edit=flip_last_byte),
        ec.CheckpointError,
        r"bias: the data in '.*' does not match its recorded checksum: the file is "
        r"corrupted",
    ),
    misuse(
        "load/empty-file",
        load("safetensors", edit=lambda d: b""),
        ec.CheckpointError,
        r"is not a valid safetensors file: it has only 0 bytes",
    ),
    misuse(
        "load/not-a-safetensors-file",
        lambda: ec.load(saved("eqx"), linear()),
        ec.CheckpointError,
        r"linear\.eqx' is not a valid safetensors file: it is an "
        r"Equinox-style leaf file \(\.eqx, written by tree_serialise_leaves\); read it "
        r"with tree_deserialise_leaves\(path, like\)",
    ),
    misuse(
        "save/arguments-swapped",
        lambda: ec.save(linear(), workdir() / "s.safetensors"),
        TypeError,
        r"save\(path, pytree\): path must be a str/os\.PathLike path or a "
        r"writable binary file object; got Linear \(the arguments look swapped",
    ),
    misuse(
        "save/text-mode-file",
        lambda: ec.save(io.StringIO(), linear()),
        TypeError,
        r"save\(path, pytree\): path is a text-mode file; pass a binary file object",
    ),
    misuse(
        "save/inside-jit",
        lambda: jax.jit(lambda m: ec.save(io.BytesIO(), m))(linear()),
        TypeError,
        r"save: weight is a traced array \(f32\[4,3\]\), not a concrete "
        r"one: saving needs concrete values, so call save outside jax\.jit / filter_jit",
    ),
    misuse(
        "save/inside-filter_jit",
        lambda: ec.filter_jit(lambda m: ec.save(workdir() / "j.safetensors", m))(linear()),
        TypeError,
        r"save: weight is a traced array .* call save outside jax\.jit",
    ),
    misuse(
        "load/like-a-class",
        lambda: ec.load(saved("safetensors"), nn.Linear),
        TypeError,
        r"load\(path, like\): like must be a pytree of the expected structure .*got the "
        r"class Linear itself: build one, e\.g\. ecliptic\.filter_eval_shape\(Linear",
    ),
    misuse(
        "load/verify-unknown",
        lambda: ec.load(saved("safetensors"), linear(), verify="yes"),
        ValueError,
        r"load\(verify=\.\.\.\) must be one of \(True, False, 'require'\); "
        r"got 'yes'",
    ),
    misuse(
        "load/verify-require-foreign-file",
        lambda: ec.load(foreign(), linear(), verify="require"),
        ec.CheckpointError,
        r"has no ecliptic checksums .*refuses files whose data cannot be verified",
    ),
    misuse(
        "load/format-version-0",
        load("safetensors", edit=version_zero),
        ec.CheckpointError,
        r"was written in an older, unsupported ecliptic checkpoint format \(version '0'",
    ),
    misuse(
        "load_metadata/missing-file",
        lambda: ec.load_metadata(workdir() / "none"),
        ec.CheckpointError,
        r"cannot read '.*none'",
    ),
    misuse(
        "tree_deserialise_leaves/missing-file",
        lambda: ec.tree_deserialise_leaves(workdir() / "none.eqx", linear()),
        ec.CheckpointError,
        r"cannot open '.*none\.eqx'.*No such file",
    ),
    misuse(
        "tree_deserialise_leaves/text-mode-file",
        lambda: ec.tree_deserialise_leaves(io.StringIO("x"), linear()),
        TypeError,
        r"path_or_file is a text-mode file.*open\(path, 'rb'\)",
    ),
    misuse(
        "tree_deserialise_leaves/wrong-architecture",
        load("eqx", lambda: abstract(4, 3)),
        ec.CheckpointError,
        r"weight: expected f32\[3,4\], file has f32\[4,3\]",
    ),
    misuse(
        "tree_deserialise_leaves/larger-model",
        load("eqx", lambda: mlp()),
        ec.CheckpointError,
        r"layers\.0\.weight: expected f32\[8,3\], file has f32\[4,3\]",
    ),
    misuse(
        "tree_deserialise_leaves/smaller-like",
        load("eqx", lambda: [jnp.ones((4, 3))]),
        ec.CheckpointError,
        r"has 144 bytes left after the last leaf of `like`: it was "
        r"saved from a different \(larger\) pytree",
    ),
    misuse(
        "tree_deserialise_leaves/dtype-mismatch",
        load("eqx", lambda: abstract(dtype=jnp.float16)),
        ec.CheckpointError,
        r"weight: expected f16\[4,3\], file has f32\[4,3\]",
    ),
    misuse(
        "tree_deserialise_leaves/truncated",
        load("eqx", edit=lambda d: d[: len(d) - 5]),
        ec.CheckpointError,
        r"bias: file ends early: the data of a f32\[4\] array needs "
        r"16 bytes, only 11 left",
    ),
    misuse(
        "tree_deserialise_leaves/corrupted-header",
        load("eqx", edit=lambda d: b"\0" + d[1:]),
        ec.CheckpointError,
        r"weight: not an \.npy record",
    ),
    misuse(
        "tree_deserialise_leaves/safetensors-file",
        lambda: ec.tree_deserialise_leaves(saved("safetensors"), linear()),
        ec.CheckpointError,
        r"linear\.safetensors' is a safetensors checkpoint.*"
        r"tree_deserialise_leaves reads Equinox leaf files.*ecliptic\.load\(path, like\)",
    ),
    misuse(
        "tree_serialise_leaves/path-a-float",
        lambda: ec.tree_serialise_leaves(3.5, linear()),
        TypeError,
        r"path_or_file must be a str/os\.PathLike path or a binary file object; "
        r"got float",
    ),
    misuse(
        "tree_serialise_leaves/missing-directory",
        lambda: ec.tree_serialise_leaves(workdir() / "nope" / "x.eqx", linear()),
        ec.CheckpointError,
        r"cannot open '.*x\.eqx'",
    ),
    misuse(
        "tree_serialise_leaves/filter_spec-an-int",
        lambda: ec.tree_serialise_leaves(io.BytesIO(), linear(), filter_spec=3),
        TypeError,
        r"filter_spec leaves must be callables \(file, leaf\) -> \.\.\.; got 3",
    ),
]


def state_dict_with(edit: Any, **kwargs: Any) -> Any:
    def run() -> Any:
        sd = ec.state_dict(linear())
        edit(sd)
        return ec.load_state_dict(linear(), sd, **kwargs)

    return run


STATE_DICT_CASES = [
    misuse(
        "load_state_dict/missing-key",
        state_dict_with(lambda sd: sd.pop("bias")),
        ec.StateDictError,
        r"(?s)missing keys \(1\):\s+bias",
    ),
    misuse(
        "load_state_dict/unexpected-key",
        state_dict_with(lambda sd: sd.update(extra=np.ones(2))),
        ec.StateDictError,
        r"(?s)unexpected keys \(1\):\s+extra",
    ),
    misuse(
        "load_state_dict/wrong-shape",
        state_dict_with(lambda sd: sd.update(weight=np.ones((3, 4), np.float32))),
        ec.StateDictError,
        r"(?s)mismatched keys \(1\):\s+weight: expected f32\[4,3\], "
        r"got f32\[3,4\]",
    ),
    misuse(
        "load_state_dict/string-value",
        state_dict_with(lambda sd: sd.update(weight="w")),
        ec.StateDictError,
        r"(?s)mismatched keys.*weight: expected f32\[4,3\]",
    ),
    misuse(
        "load_state_dict/not-a-mapping",
        lambda: ec.load_state_dict(linear(), [("weight", np.ones((4, 3)))]),
        TypeError,
        r"state_dict must be a mapping name -> array; got list",
    ),
    misuse(
        "load_state_dict/int-keys",
        lambda: ec.load_state_dict(linear(), {1: np.ones(1)}),
        TypeError,
        r"state_dict keys must be strings; got \[1\]",
    ),
    misuse(
        "state_dict/unknown-format",
        lambda: ec.state_dict(linear(), format="pytorch"),
        ValueError,
        r"format must be one of \('native', 'torch'\); got 'pytorch'",
    ),
    misuse(
        "state_dict/state-a-dict",
        lambda: ec.state_dict(linear(), state={}),
        TypeError,
        r"state must be an ecliptic\.nn\.State or None; got dict",
    ),
    misuse(
        "state_dict/torch-batchnorm-without-state",
        lambda: ec.state_dict(
            nn.make_with_state(nn.BatchNorm)(3, "batch", mode="torch")[0], format="torch"
        ),
        ec.CheckpointError,
        r"a BatchNorm keeps running_mean/running_var in a State: pass the model's state",
    ),
    misuse(
        "named_parameters/unknown-format",
        lambda: list(ec.named_parameters(linear(), format="x")),
        ValueError,
        r"format must be one of \('native', 'torch'\); got 'x'",
    ),
]


CASES = CHECKPOINT_CASES + STATE_DICT_CASES


@pytest.mark.parametrize("fn, exception, regex", CASES)
def test_misuse(fn: Any, exception: type[BaseException], regex: str) -> None:
    check_misuse(fn, exception, regex)
