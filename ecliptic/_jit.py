"""``filter_jit``: `jax.jit` where array leaves are traced and everything else is static.

Call path (kept this short on purpose, it runs on every call): arguments made only of
Modules this wrapper already flattened or built, arrays and tuples? gather their arrays
and reuse the `CallKey` (`_call_memo`). Else flatten ``(fun, args, kwargs)`` once in C++,
split the leaves with an interned per-type-signature `SplitPlan`, and make one `CallKey`
(treedef + static leaves, hashed once) -> one `jax.jit` of a module-level body, whose C++
dispatch does the cache lookup -> outputs unflattened with the treedef captured at trace
time.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, overload

import jax
import jax.tree_util as jtu

from ._call_memo import CallMemo
from ._checks import check_callable
from ._exceptions import reraise_runtime_error
from ._filters import is_array
from ._messages import array_text, short_repr
from ._module import FunctionWrapper, field, module_update_wrapper
from ._split import (
    CallKey,
    Decorator,
    DonationKey,
    Params,
    Result,
    StaticOutput,
    call_and_split,
    donation_call,
    plan_for,
    split_call,
    unhashable_error,
    untraceable_array_error,
)

_DONATE_MODES = ("none", "all", "all-except-first", "warn", "warn-except-first")
_FORBIDDEN_JIT_KWARGS = ("static_argnums", "static_argnames", "donate_argnums", "donate_argnames")
_flatten = jtu.tree_flatten


def _body(dynamic: list[Any], key: CallKey) -> tuple[list[Any], StaticOutput]:
    # A function of this module's own: JAX keeps its trace caches per function.
    return call_and_split(dynamic, key)


def _body_donating(
    kept: list[Any], donated: list[Any], key: DonationKey
) -> tuple[list[Any], StaticOutput]:
    return _body(key.interleave(kept, donated), key)


class _JitWrapper(FunctionWrapper):
    """The callable that `filter_jit` returns. A pytree: ``fun`` is its child."""

    donate: str = field(static=True)
    jitted: Any = field(static=True)
    memo: CallMemo = field(static=True)

    @property
    def fn(self) -> Callable[..., Any]:
        """The wrapped function (Equinox's name for it)."""
        return self.fun

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The positional arguments for ``self.jitted`` (the static key last)."""
        if self.donate == "none":
            return split_call((self.fun, args, kwargs))
        kept = undonated_range(self.donate, self.fun, args)
        return donation_call((self.fun, args, kwargs), kept)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.donate == "none":
            fun, memo = self.fun, self.memo
            hit = memo.lookup(fun, args, kwargs)
            if hit is None:
                leaves, treedef = _flatten((fun, args, kwargs))
                plan = plan_for(leaves)
                dynamic = plan.take_dynamic(leaves)
                key = CallKey(treedef, plan, plan.take_static(leaves))
            else:
                dynamic, key = hit
            try:
                out, out_static = self.jitted(dynamic, key)
            except Exception as e:
                _reraise_clearly(e, key, (fun, args, kwargs))
                raise
            result = out_static.unflatten(out)
            if hit is None:
                memo.after_ordinary_call(fun, args, kwargs, dynamic, key, result, out, out_static)
            else:
                memo.learn_output(result, out, out_static)
            return result
        call_args = self._prepare(args, kwargs)
        with warnings.catch_warnings():
            if self.donate.startswith("all"):
                warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
            try:
                out, out_static = self.jitted(*call_args)
            except Exception as e:
                key = call_args[-1]
                _reraise_clearly(e, key, (self.fun, args, kwargs))
                raise
        return out_static.unflatten(out)

    def lower(self, *args: Any, **kwargs: Any) -> Staged:
        """Lower for these arguments ahead of time (`jax.jit(...).lower` for filter_jit).

        **Returns:** an object with `.compile()`, `.as_text()` and the rest of
        `jax.stages.Lowered`; the compiled object is called with the same arguments
        (static ones included) as the wrapper itself.
        """
        call_args = self._prepare(args, kwargs)
        check = functools.partial(self._call_compiled, _signature(args, kwargs), call_args[-1])
        return Staged(self.jitted.lower(*call_args), check)

    def _call_compiled(
        self,
        signature: list[tuple[str, str]],
        lowered_key: Any,
        compiled: Any,
        args: Any,
        kwargs: Any,
    ) -> Any:
        """Call an ahead-of-time compiled `compiled` with the wrapper's arguments."""
        *call_args, key = self._prepare(args, kwargs)
        if key != lowered_key:  # the static half is baked into the executable
            raise _aot_mismatch(signature, args, kwargs) or TypeError(
                "filter_jit(...).lower(...).compile(): called with different static "
                "arguments than it was lowered for; lower again for new ones."
            )
        try:
            out, out_static = compiled(*call_args)
        except Exception as e:
            reraise_runtime_error(e)
            if isinstance(e, TypeError):
                clear = _aot_mismatch(signature, args, kwargs)
                if clear is not None:
                    raise clear from None
            raise
        return out_static.unflatten(out)

    def trace(self, *args: Any, **kwargs: Any) -> Any:
        """`jax.jit(...).trace` for the filtered call."""
        return self.jitted.trace(*self._prepare(args, kwargs))


def undonated_range(donate: str, fun: Any, args: tuple[Any, ...]) -> tuple[int, int]:
    """The leaves of ``(fun, args, kwargs)`` that a donating call does not donate, as a
    ``(start, stop)`` range: none for "all"/"warn"; the first argument's for the
    "-except-first" modes. The arrays of ``fun`` itself (a Module, a bound method) are
    donated like the arguments, as in Equinox."""
    if not (donate.endswith("except-first") and args):
        return (0, 0)
    start = len(jtu.tree_leaves(fun))
    return (start, start + len(jtu.tree_leaves(args[0])))


def check_donate(name: str, donate: Any) -> None:
    """A clear error for a `donate` mode that filter_jit/filter_pmap do not know."""
    if donate not in _DONATE_MODES:
        raise ValueError(f"{name}(donate=...) must be one of {_DONATE_MODES}; got {donate!r}.")


def _reraise_clearly(error: Exception, key: CallKey, call: tuple[Any, Any, Any]) -> None:
    """Turn errors from inside the compiled call into ecliptic's own, clear ones."""
    reraise_runtime_error(error)
    if isinstance(error, ValueError) and "static arguments should be comparable" in str(error):
        raise unhashable_error(key.treedef, key.marked_static(), "filter_jit") from None
    if isinstance(error, TypeError):
        clear = untraceable_array_error(call, "filter_jit")
        if clear is not None:
            raise clear from None


def _signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    """``(path, description)`` of every leaf of a call, to explain an AOT mismatch."""
    out = []
    for path, leaf in jtu.tree_flatten_with_path((args, kwargs))[0]:
        where = ("args" if path[0].idx == 0 else "kwargs") + jtu.keystr(path[1:])
        if is_array(leaf):
            what = f"{array_text(leaf.dtype, leaf.shape)} array"
        else:
            what = f"static value {short_repr(leaf, 40)}"
        out.append((where, what))
    return out


def _aot_mismatch(lowered: list[tuple[str, str]], args: Any, kwargs: Any) -> TypeError | None:
    """A clear error naming the first argument that differs from the lowered ones."""
    now = _signature(args, kwargs)
    if len(now) != len(lowered):
        diff = f"it was lowered for {len(lowered)} leaves, now given {len(now)}"
    else:
        pairs = [(a, b) for a, b in zip(lowered, now) if a != b]
        if not pairs:
            return None
        (path, before), (path_now, after) = pairs[0]
        at = "" if path == path_now else f" at {path}"
        diff = f"{path_now} is a {after}, but it was lowered for a {before}{at}"
    return TypeError(
        f"filter_jit(...).lower(...).compile(): called with different arguments than it "
        f"was lowered for: {diff}. A compiled function only accepts the shapes, dtypes "
        "and static values it was lowered with; lower again for new ones."
    )


class Staged:
    """A lowered or compiled filtered transformation: JAX's stage object (`.as_text()`,
    `.cost_analysis()`, ...), whose `.compile()` gives another `Staged` that is called
    with the same arguments as the wrapper it came from.

    **Arguments:**

    - `stage`: the `jax.stages.Lowered` or `jax.stages.Compiled`.
    - `call`: ``call(compiled, args, kwargs)`` runs a compiled stage for a wrapper call.

    ```python
    compiled = ecliptic.filter_jit(f).lower(x).compile()
    compiled(x)
    ```
    """

    def __init__(self, stage: Any, call: Callable[[Any, Any, Any], Any]):
        self._stage = stage
        self._call = call

    def compile(self, *args: Any, **kwargs: Any) -> Staged:
        return Staged(self._stage.compile(*args, **kwargs), self._call)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(self._stage, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stage, name)


@functools.lru_cache(maxsize=1)
def _jit_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(jax.jit).parameters)


def _check_jit_kwargs(jitkwargs: dict[str, Any]) -> None:
    unknown = sorted(set(jitkwargs) - _jit_parameters())
    if unknown:
        allowed = sorted(_jit_parameters() - {"fun", *_FORBIDDEN_JIT_KWARGS})
        raise TypeError(
            f"filter_jit got unexpected keyword argument(s) {unknown}: the extra keyword "
            f"arguments are passed to jax.jit, which accepts {allowed}."
        )


@overload
def filter_jit(
    fun: Callable[Params, Result], *, donate: str = "none", **jitkwargs: Any
) -> Callable[Params, Result]: ...


@overload
def filter_jit(
    fun: None = None, *, donate: str = "none", **jitkwargs: Any
) -> Decorator[Params, Result]: ...


def filter_jit(fun: Any = None, *, donate: str = "none", **jitkwargs: Any) -> Any:
    """Compile a function with `jax.jit`, tracing only its array leaves.

    Every argument (positional or keyword, and `fun` itself if it is a pytree such as a
    bound method) is flattened: JAX/NumPy arrays are traced; every other leaf (Python
    numbers, functions, strings, flags, ...) is static, i.e. hashed into the compilation
    cache. Outputs may contain non-arrays; they are returned as they were produced.

    **Arguments:**

    - `fun`: the function to compile. Omit it to get a decorator.
    - `donate`: which input buffers XLA may reuse for outputs: `"none"` (default),
        `"all"` (all array arguments), `"all-except-first"` (all but those of the first
        argument); `"warn"` / `"warn-except-first"` are the same but keep JAX's warning
        when a donation could not be used.
    - `**jitkwargs`: passed to `jax.jit` (e.g. `device`, `backend`, `compiler_options`).
        `static_argnums`/`donate_argnums` & co. are not accepted: filtering replaces them.

    **Returns:** the compiled callable. It also works as a method decorator and offers
    `.lower(*args, **kwargs)` for ahead-of-time compilation.

    Static leaves are compared by type and value, so `1`, `1.0` and `True` compile
    separately. Calls whose arguments are Modules the wrapper has already seen (the same
    model again, or its own previous outputs) skip flattening them: this relies on
    Modules being immutable, so a Module changed with `object.__setattr__` after a call
    is not seen by the next one. Set the environment variable `ECLIPTIC_FAST_PATH=0`
    before creating the wrapper to turn that shortcut off (see docs/performance.md).

    ```python
    @ecliptic.filter_jit
    def loss(model, x, y):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)
    ```
    """
    check_donate("filter_jit", donate)
    for name in _FORBIDDEN_JIT_KWARGS:
        if name in jitkwargs:
            raise TypeError(
                f"filter_jit does not take {name}: non-array arguments are static "
                "automatically and donation is chosen with donate=...; to make an array "
                "static, wrap it (e.g. in a tuple of Python numbers) or close over it."
            )
    if jitkwargs:
        _check_jit_kwargs(jitkwargs)
    if fun is None:
        return functools.partial(filter_jit, donate=donate, **jitkwargs)
    check_callable(fun, "filter_jit(fun): fun")
    if donate == "none":
        jitted = jax.jit(_body, static_argnums=1, **jitkwargs)
    else:
        jitted = jax.jit(_body_donating, static_argnums=2, donate_argnums=1, **jitkwargs)
    wrapper = _JitWrapper(fun=fun, donate=donate, jitted=jitted, memo=CallMemo())
    return module_update_wrapper(wrapper, fun)
