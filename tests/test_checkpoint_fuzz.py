"""Fuzzing the loaders with thousands of damaged files.

Every mutated file must either load or raise `ecliptic.CheckpointError`, never any other
exception. For `load` (safetensors with per-tensor and header checksums), what loads
must be identical to what was saved. The leaf format (`tree_deserialise_leaves`) is
Equinox's and has no checksum, so a damaged data byte loads as damaged data: there,
what loads must be identical to the original or to what NumPy itself reads from the
same bytes.
"""

from __future__ import annotations

import io
import json
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from persistence_helpers import Node, bits_equal, raw_bytes

import ecliptic
from ecliptic import CheckpointError

N_LOAD = 2500
N_LEAVES = 2000


def make_tree():
    rng = np.random.default_rng(0)
    return {
        "node": Node(jax.device_put(rng.standard_normal((3, 4)).astype(np.float32)), None, "p"),
        "bf16": jax.device_put(rng.standard_normal(5).astype(jnp.bfloat16)),
        "ints": [np.arange(6, dtype=np.int16).reshape(2, 3), jax.device_put(np.uint8(7))],
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 2), np.float32),
        "scalars": (1.5, 3, True),
        "act": jax.nn.relu,
    }


# ------------------------------------------------------------------------- mutations


def flip(data: bytes, rng: random.Random, header_end: int) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        # Mostly the header, where the structure lives; sometimes the data.
        limit = header_end if rng.random() < 0.75 else len(out)
        position = rng.randrange(min(limit, len(out)))
        out[position] ^= 1 << rng.randrange(8) if rng.random() < 0.8 else rng.randrange(1, 256)
    return bytes(out)


def truncate_or_extend(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.7:
        return data[: rng.randrange(len(data))]
    return data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))


def _random_json_value(rng: random.Random):
    return rng.choice(
        [0, -1, 2**70, 1.5, "F32", "BF16", "I64", "", [], [1, 2], [-1], {}, None, True, [[]]]
    )


def edit_header(data: bytes, rng: random.Random) -> bytes:
    """Re-encode the JSON header after a structural edit (the length stays consistent)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    rest = data[8 + n :]
    names = [k for k in header if k != "__metadata__"]
    choice = rng.randrange(9)
    name = rng.choice(names)
    entry = header[name]
    if choice == 0:
        entry["dtype"] = rng.choice(["F32", "F16", "BF16", "I32", "U8", "BOOL", "F64", "C64", "X9"])
    elif choice == 1:
        entry["shape"] = [rng.randrange(0, 5) for _ in range(rng.randrange(0, 3))]
    elif choice == 2:
        entry["data_offsets"] = [
            entry["data_offsets"][0] + rng.randrange(-4, 5),
            entry["data_offsets"][1] + rng.randrange(-4, 5),
        ]
    elif choice == 3:
        header[name + rng.choice(["x", ".0", ""])] = header.pop(name)
    elif choice == 4:
        del header[name]
    elif choice == 5:
        entry[rng.choice(["dtype", "shape", "data_offsets", "extra"])] = _random_json_value(rng)
    elif choice == 6:
        meta = header.get("__metadata__", {})
        if meta:
            key = rng.choice(sorted(meta))
            if rng.random() < 0.5:
                del meta[key]
            else:
                meta[key] = rng.choice(["", "1", "[]", "{}", meta[key][::-1], "x" + meta[key]])
    elif choice == 7:
        header.pop("__metadata__", None)
    else:
        other = rng.choice(names)
        header[name], header[other] = header[other], header[name]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + rest


_NPY_EDITS = [
    (b"'<f4'", [b"'<f8'", b"'>f4'", b"'<i4'", b"'|O'", b"'<V4'", b"'<U1'", b"[('a', '<f4')]"]),
    (b"'<V2'", [b"'<f2'", b"'<V4'", b"'|b1'", b"'<u2'"]),
    (b"'|b1'", [b"'|u1'", b"'<f4'"]),
    (b"False", [b"True", b"None", b"0"]),
    (b"(3, 4)", [b"(4, 3)", b"(12,)", b"(3, 4, 1)", b"(-3, 4)", b"(3.0, 4)", b"(2**40, 4)"]),
    (b"(2, 3)", [b"(3, 2)", b"(6,)", b"()", b"(2, 3, 0)"]),
    (b"()", [b"(1,)", b"(0,)", b"[]"]),
    (b"'shape'", [b"'shap'", b"'extra': 1, 'shape'"]),
]


def edit_npy_header(data: bytes, rng: random.Random) -> bytes:
    """Edit one record's header dict, keeping the header length (padding absorbs it)."""
    starts = [i for i in range(len(data)) if data.startswith(b"\x93NUMPY", i)]
    start = rng.choice(starts)
    length = int.from_bytes(data[start + 8 : start + 10], "little")
    body = data[start + 10 : start + 10 + length]
    old, news = rng.choice([e for e in _NPY_EDITS if e[0] in body] or _NPY_EDITS[:1])
    if old not in body:
        return data
    text = body.rstrip(b" \n").replace(old, rng.choice(news), 1)
    if len(text) + 1 > length:
        return data
    body = text + b" " * (length - len(text) - 1) + b"\n"
    return data[: start + 10] + body + data[start + 10 + length :]


# ----------------------------------------------------------------------- safetensors


def test_fuzz_load(tmp_path):
    tree = make_tree()
    original = tmp_path / "orig.safetensors"
    ecliptic.save(original, tree)
    data = original.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(1234)
    path = tmp_path / "mutated.safetensors"
    outcomes = {"loaded": 0, "error": 0}
    # Mostly in memory (fast); every tenth through a real file.
    for i in range(N_LOAD):
        kind = i % 3
        if kind == 0:
            mutated = flip(data, rng, header_end)
        elif kind == 1:
            mutated = truncate_or_extend(data, rng)
        else:
            mutated = edit_header(data, rng)
        if i % 10 == 0:
            path.write_bytes(mutated)
            source = path
        else:
            source = io.BytesIO(mutated)
        try:
            out = ecliptic.load(source, tree)
        except CheckpointError:
            outcomes["error"] += 1
            continue
        except Exception as e:  # pragma: no cover - the failure being tested for
            pytest.fail(f"mutation {i} raised {type(e).__name__}: {e}")
        assert bits_equal(out, tree), f"mutation {i} loaded different data"
        outcomes["loaded"] += 1
    assert outcomes["error"] > N_LOAD // 2


# ---------------------------------------------------------------------- leaf format


def numpy_reading(mutated: bytes, like) -> list[bytes] | None:
    """What NumPy reads from the mutated bytes, record by record, as like's dtypes."""
    f = io.BytesIO(mutated)
    out = []
    try:
        for leaf in jax.tree_util.tree_leaves(like):
            if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float)):
                continue
            array = np.load(f, allow_pickle=False)
            dtype = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype  # pyright: ignore[reportAttributeAccessIssue]
            if array.dtype.kind == "V":
                array = array.view(dtype)
            out.append(raw_bytes(array.astype(dtype)))
    except Exception:
        return None
    return out


def loaded_bytes(tree) -> list[bytes]:
    return [
        raw_bytes(np.asarray(leaf))
        for leaf in jax.tree_util.tree_leaves(tree)
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float))
    ]


def test_fuzz_tree_deserialise_leaves(tmp_path):
    tree = make_tree()
    f = io.BytesIO()
    ecliptic.tree_serialise_leaves(f, tree)
    data = f.getvalue()
    rng = random.Random(99)
    path = tmp_path / "leaves.eqx"
    for i in range(N_LEAVES):
        kind = i % 3
        if kind == 0:
            mutated = flip(data, rng, len(data))
        elif kind == 1:
            mutated = truncate_or_extend(data, rng)
        else:
            mutated = edit_npy_header(data, rng)
        use_path = i % 10 == 0
        try:
            if use_path:
                path.write_bytes(mutated)
                out = ecliptic.tree_deserialise_leaves(path, tree)
            else:
                out = ecliptic.tree_deserialise_leaves(io.BytesIO(mutated), tree)
        except CheckpointError:
            continue
        except Exception as e:  # pragma: no cover - the failure being tested for
            pytest.fail(f"mutation {i} raised {type(e).__name__}: {e}")
        if bits_equal(out, tree):
            continue
        reference = numpy_reading(mutated, tree)
        assert reference is not None and reference == loaded_bytes(out), f"mutation {i}"
