"""The bad-input catalogue: tree utilities (tree_at, tree_equal, tree_check, ...), runtime
errors (error_if, branched_error_if) and debug helpers.
See bad_input_helpers.py for what each row asserts."""

# Each row passes a wrong type on purpose to check the error: argument types are not checked.
# pyright: reportArgumentType=false, reportCallIssue=false

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import pytest
from bad_input_helpers import check_misuse, misuse
from bad_input_layers import POINT

import ecliptic as ec
from ecliptic import nn

# ----------------------------------------------------------------------------- Trees

TREE = [jnp.ones(3), jnp.zeros(2)]

TREE_CASES = [
    misuse(
        "tree_at/where-returns-new-array",
        lambda: ec.tree_at(lambda t: jnp.ones(3), TREE, 1),
        ValueError,
        r"tree_at: `where` must return a node of `pytree`.*not in the tree",
    ),
    misuse(
        "tree_at/where-computes",
        lambda: ec.tree_at(lambda m: m.w + 1, POINT, 3),
        TypeError,
        r"tree_at: calling `where` failed.*must only pick nodes out",
    ),
    misuse(
        "tree_at/where-selects-static-field",
        lambda: ec.tree_at(lambda m: m.tag, POINT, 3),
        ValueError,
        r"tree_at: `where` must return a node.*static field",
    ),
    misuse(
        "tree_at/replace-and-replace_fn",
        lambda: ec.tree_at(lambda t: t[0], TREE, replace=1, replace_fn=abs),
        TypeError,
        r"tree_at: pass exactly one of `replace` and `replace_fn`; got both",
    ),
    misuse(
        "tree_at/neither-replace",
        lambda: ec.tree_at(lambda t: t[0], TREE),
        TypeError,
        r"tree_at: pass exactly one of `replace` and `replace_fn`; got neither",
    ),
    misuse(
        "tree_at/wrong-length-replace",
        lambda: ec.tree_at(lambda t: (t[0], t[1]), TREE, replace=(3,)),
        ValueError,
        r"tree_at: `where` selected 2 nodes but `replace` has 1 values",
    ),
    misuse(
        "tree_at/replace-not-a-sequence",
        lambda: ec.tree_at(lambda t: (t[0], t[1]), TREE, replace=3),
        ValueError,
        r"`where` selected 2 nodes.*`replace` must be a tuple/list of as many values",
    ),
    misuse(
        "tree_at/where-not-callable",
        lambda: ec.tree_at(0, TREE, 3),
        TypeError,
        r"tree_at\(where=\.\.\.\) must be a function `pytree -> node\(s\)`; got 0",
    ),
    misuse(
        "tree_at/replace_fn-not-callable",
        lambda: ec.tree_at(lambda t: t[0], TREE, replace_fn=3),
        TypeError,
        r"tree_at\(replace_fn=\.\.\.\) must be callable; got 3",
    ),
    misuse(
        "tree_at/is_leaf-not-callable",
        lambda: ec.tree_at(lambda t: t[0], TREE, 2, is_leaf=3),
        TypeError,
        r"tree_at\(is_leaf=\.\.\.\) must be callable or None; got 3",
    ),
    misuse(
        "tree_equal/nothing",
        lambda: ec.tree_equal(),
        TypeError,
        r"tree_equal\(\) needs at least one pytree",
    ),
    misuse(
        "tree_equal/atol-not-a-number",
        lambda: ec.tree_equal(TREE, TREE, atol="a"),
        ValueError,
        r"tree_equal\(atol=\.\.\.\) must be a number; got 'a'",
    ),
    misuse(
        "tree_check/duplicate-node",
        lambda: ec.tree_check([POINT, POINT]),
        ValueError,
        r"tree_check: the same .*Point object appears twice.*at \[0\] and at \[1\]",
    ),
    misuse(
        "tree_check/cycle",
        lambda: (lambda a: (a.append(a), ec.tree_check(a)))([]),
        ValueError,
        r"tree_check: the pytree has a cycle",
    ),
    misuse(
        "apply_updates/structure",
        lambda: ec.apply_updates(TREE, TREE + [jnp.ones(1)]),
        ValueError,
        r"apply_updates: `updates` must have the structure of `model`",
    ),
    misuse(
        "apply_updates/shape",
        lambda: ec.apply_updates(TREE, [jnp.ones(3), jnp.ones(3)]),
        TypeError,
        r"apply_updates: cannot add the update at \[1\].*\(2,\), \(3,\)",
    ),
    misuse(
        "tree_pformat/width",
        lambda: ec.tree_pformat(TREE, width=-1),
        ValueError,
        r"tree_pformat\(width=\.\.\.\) must be a positive int; got -1",
    ),
    misuse(
        "tree_pformat/indent",
        lambda: ec.tree_pformat(TREE, indent=-1),
        ValueError,
        r"tree_pformat\(indent=\.\.\.\) must be an int >= 0; got -1",
    ),
    misuse(
        "inference_mode/value-not-bool",
        lambda: nn.inference_mode(nn.Dropout(), "yes"),
        TypeError,
        r"inference_mode\(pytree, value\): value must be a bool; got 'yes'",
    ),
]

# ----------------------------------------------------------------------------- Errors, debug


def with_env(name: str, value: str, fn: Any) -> Any:
    def run() -> Any:
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old

    return run


X, FALSE = jnp.ones(2), jnp.array(False)

ERROR_CASES = [
    misuse(
        "error_if/bad-on_error",
        lambda: ec.error_if(X, FALSE, "m", on_error="explode"),
        ValueError,
        r"error_if: `on_error` must be one of 'raise', 'breakpoint', 'nan'.*"
        r"got 'explode'",
    ),
    misuse(
        "error_if/bad-env-var",
        with_env("EQX_ON_ERROR", "bogus", lambda: ec.error_if(X, FALSE, "m")),
        ValueError,
        r"EQX_ON_ERROR must be one of 'raise', 'breakpoint', 'nan'.*got 'bogus'",
    ),
    misuse(
        "error_if/msg-not-str",
        lambda: ec.error_if(X, FALSE, 3),
        TypeError,
        r"error_if: `msg` must be a str; got 3",
    ),
    misuse(
        "error_if/pred-not-bool",
        lambda: ec.error_if(X, X, "m"),
        TypeError,
        r"error_if: `pred` must be a boolean array or a Python bool.*got f32\[2\]",
    ),
    misuse(
        "error_if/fires-under-jit",
        lambda: ec.filter_jit(lambda x: ec.error_if(x, x > 0, "x must be <= 0"))(X),
        ec.EclipticRuntimeError,
        r"(?s)^Above is the stack outside of JIT.*EQX_ON_ERROR.*\nx must be <= 0$",
    ),
    misuse(
        "branched_error_if/index-out-of-range",
        lambda: ec.branched_error_if(X, jnp.array(True), 5, ["a", "b"]),
        ValueError,
        r"branched_error_if: `index` must satisfy 0 <= index < len\(msgs\) = 2; got 5",
    ),
    misuse(
        "branched_error_if/msgs-a-string",
        lambda: ec.branched_error_if(X, jnp.array(True), 0, "ab"),
        TypeError,
        r"branched_error_if: `msgs` must be a non-empty sequence of strings; got 'ab'",
    ),
    misuse(
        "branched_error_if/float-index",
        lambda: ec.branched_error_if(X, jnp.array(True), jnp.array(0.5), ["a", "b"]),
        TypeError,
        r"branched_error_if: `index` must be a Python int or an integer scalar",
    ),
    misuse(
        "debug/assert_max_traces-negative",
        lambda: ec.debug.assert_max_traces(abs, max_traces=-1),
        ValueError,
        r"assert_max_traces: `max_traces` must be a non-negative int or None; got -1",
    ),
    misuse(
        "debug/get_num_traces-undecorated",
        lambda: ec.debug.get_num_traces(abs),
        ValueError,
        r"get_num_traces: `fn` is not .*decorated with .*assert_max_traces",
    ),
    misuse(
        "debug/breakpoint_if-float-pred",
        lambda: ec.debug.breakpoint_if(X),
        TypeError,
        r"breakpoint_if: `pred` must be a boolean array or a Python bool.*f32\[2\]",
    ),
    misuse(
        "debug/store_dce-outside-jit",
        lambda: ec.debug.store_dce(X),
        RuntimeError,
        r"store_dce must be used inside a jax\.jit/filter_jit-compiled function",
    ),
    misuse(
        "debug/announce_transform-announce-not-callable",
        lambda: ec.debug.announce_transform(X, announce=3),
        TypeError,
        r"announce_transform: `announce` must be callable; got 3",
    ),
]


def exceeds_max_traces() -> None:
    f = ec.filter_jit(ec.debug.assert_max_traces(lambda x: x, max_traces=1))
    f(jnp.ones(1))
    f(jnp.ones(2))


ERROR_CASES.append(
    misuse(
        "debug/assert_max_traces-exceeded",
        exceeds_max_traces,
        RuntimeError,
        r"was traced 2 times, but assert_max_traces allows at most 1.*recompilation",
    )
)

CASES = TREE_CASES + ERROR_CASES


@pytest.mark.parametrize("fn, exception, regex", CASES)
def test_misuse(fn: Any, exception: type[BaseException], regex: str) -> None:
    check_misuse(fn, exception, regex)
