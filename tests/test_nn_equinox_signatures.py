"""Every layer's constructor and `__call__` accept Equinox 0.13.8's arguments, in
Equinox's positional order, with Equinox's defaults, so that a program written for
Equinox builds and calls the same layers. (Skipped when Equinox is not installed.)"""

import inspect

import pytest

from ecliptic import nn

eqx = pytest.importorskip("equinox")

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def layer_names():
    names = []
    for name in sorted(nn.__all__):
        ours, theirs = getattr(nn, name), getattr(eqx.nn, name, None)
        if inspect.isclass(ours) and inspect.isclass(theirs):
            names.append(name)
    return names


# Deliberate, documented differences: (layer, method, argument) -> why.
KNOWN = {
    ("RotaryPositionalEmbedding", "__init__", "dtype"): (
        "None computes in the input's dtype (float32 for half precision); Equinox's "
        "default is the default float dtype, the same for float32 and half inputs"
    ),
}


def is_sentinel(value):
    """A placeholder default ("no state given"): a bare object() or a sentinel class."""
    name = type(value).__name__.lower()
    return type(value) is object or any(word in name for word in ("sentinel", "missing"))


def same_default(ours, theirs):
    """Whether every call relying on Equinox's default gets the same behaviour here."""
    if theirs is inspect.Parameter.empty:
        return True  # Equinox requires it: a default of ours is never used by its calls
    if ours is inspect.Parameter.empty:
        return False
    if is_sentinel(ours) or is_sentinel(theirs):
        return is_sentinel(ours) and is_sentinel(theirs)
    if callable(ours) and callable(theirs):
        return ours(2.5) == theirs(2.5)  # e.g. two identity functions
    if isinstance(ours, int) and isinstance(theirs, tuple):  # 1 for (1, 1)
        return all(t == ours for t in theirs)
    try:
        return bool(ours == theirs) and type(ours) is type(theirs)
    except Exception:
        return ours is theirs


def mismatches(ours, theirs, where=("", "")):
    """How `ours` fails to accept every call that `theirs` accepts, the same way."""
    problems = []
    ours_params = inspect.signature(ours).parameters
    theirs_params = inspect.signature(theirs).parameters
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in ours_params.values()):
        return problems  # e.g. Identity: takes anything
    ours_pos = [n for n, p in ours_params.items() if p.kind in POSITIONAL]
    theirs_pos = [n for n, p in theirs_params.items() if p.kind in POSITIONAL]
    if ours_pos[: len(theirs_pos)] != theirs_pos:
        problems.append(f"positional order {ours_pos} vs Equinox's {theirs_pos}")
    for name, p in theirs_params.items():
        if p.kind in VARIADIC:
            continue
        q = ours_params.get(name)
        if (*where, name) in KNOWN:
            continue
        if q is None:
            problems.append(f"missing argument {name!r}")
        elif not same_default(q.default, p.default):
            problems.append(f"{name}: default {q.default!r} vs Equinox's {p.default!r}")
    for name, q in ours_params.items():
        if (
            name not in theirs_params
            and q.default is inspect.Parameter.empty
            and (q.kind not in VARIADIC)
        ):
            problems.append(f"extra required argument {name!r}")
    return problems


def test_there_are_layers_to_compare():
    assert {"Linear", "Conv2d", "BatchNorm", "MultiheadAttention"} <= set(layer_names())


def test_the_comparison_catches_drift():
    def equinox_like(x, use_bias=True, mode="legacy", *, key):
        del x, use_bias, mode, key

    def drifted(x, use_bias=False, mode="batch", *, key):
        del x, use_bias, mode, key

    def reordered(use_bias=True, x=None, mode="legacy", *, key=None):
        del x, use_bias, mode, key

    assert len(mismatches(drifted, equinox_like)) == 2
    assert mismatches(reordered, equinox_like)[0].startswith("positional order")
    assert mismatches(equinox_like, equinox_like) == []


@pytest.mark.parametrize("name", layer_names())
@pytest.mark.parametrize("method", ["__init__", "__call__"])
def test_signature_matches_equinox(name, method):
    ours, theirs = getattr(getattr(nn, name), method), getattr(getattr(eqx.nn, name), method)
    if ours is object.__init__ or theirs is object.__init__:
        pytest.skip(f"{name}.{method} is not defined")
    assert mismatches(ours, theirs, (name, method)) == [], name
