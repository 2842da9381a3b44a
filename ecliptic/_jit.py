"""``filter_jit``: `jax.jit` where array leaves are traced and everything else is static.

Call path (kept this short on purpose, it runs on every call):
arguments made only of Modules this wrapper already flattened or built (the same model
again, or the previous step's outputs), arrays and tuples? gather their arrays and reuse
the `CallKey` (see `_call_memo`); else flatten ``(fun, args, kwargs)`` once in C++ ->
split leaves into arrays / static with an interned per-type-signature `SplitPlan` -> one
`CallKey` (treedef + static leaves, hashed once) -> one `jax.jit` of a module-level body,
whose C++ dispatch does the cache lookup -> outputs unflattened with the treedef captured
at trace time.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, overload

import jax
import jax.tree_util as jtu

from ._call_memo import CallMemo
from ._exceptions import reraise_runtime_error
from ._filters import is_array
from ._messages import short_repr
from ._module import Module, bind_partial, field, module_update_wrapper
from ._split import (
    DYNAMIC,
    CallKey,
    StaticKey,
    StaticOutput,
    plan_for,
    split,
    split_output,
    unhashable_error,
    untraceable_array_error,
)

_F = TypeVar("_F", bound=Callable[..., Any])
_DONATE_MODES = ("none", "all", "all-except-first", "warn", "warn-except-first")
_FORBIDDEN_JIT_KWARGS = ("static_argnums", "static_argnames", "donate_argnums", "donate_argnames")
_flatten = jtu.tree_flatten


def _body(dynamic: list[Any], key: CallKey | StaticKey) -> tuple[list[Any], StaticOutput]:
    fun, args, kwargs = key.unflatten(dynamic)
    return split_output(fun(*args, **kwargs))


def _body_donating(
    kept: list[Any], donated: list[Any], key: StaticKey
) -> tuple[list[Any], StaticOutput]:
    return _body(_interleave(kept, donated, key), key)  # pyright: ignore[reportArgumentType]


def _interleave(kept: list[Any], donated: list[Any], key: _DonationKey) -> list[Any]:
    start, stop = key.kept_leaves
    dynamic = []
    kept_iter, donated_iter = iter(kept), iter(donated)
    for i, s in enumerate(key.static):
        if s is DYNAMIC:
            dynamic.append(next(kept_iter) if start <= i < stop else next(donated_iter))
    return dynamic


class _DonationKey(StaticKey):
    """A `StaticKey` that also records which leaves are not donated: those with index in
    ``range(*kept_leaves)``."""

    __slots__ = ("kept_leaves",)

    def __init__(self, treedef: Any, static: tuple[Any, ...], kept_leaves: tuple[int, int]):
        super().__init__(treedef, static, "filter_jit")
        self.kept_leaves = kept_leaves
        self._hash = hash((self._hash, kept_leaves))

    def __eq__(self, other: Any) -> bool:
        return self is other or (
            type(other) is _DonationKey
            and self._hash == other._hash
            and self.kept_leaves == other.kept_leaves
            and self.types == other.types
            and self.treedef == other.treedef
            and self.static == other.static
        )

    __hash__ = StaticKey.__hash__


class _JitWrapper(Module):
    """The callable that `filter_jit` returns. A pytree: ``fun`` is its child."""

    __ecliptic_no_method_wrapping__ = True
    fun: Callable[..., Any]
    donate: str = field(static=True)
    jitted: Any = field(static=True)
    memo: CallMemo = field(static=True)

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.fun

    @property
    def fn(self) -> Callable[..., Any]:
        """The wrapped function (Equinox's name for it)."""
        return self.fun

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The positional arguments for ``self.jitted`` (the static key last)."""
        leaves, treedef = _flatten((self.fun, args, kwargs))
        if self.donate == "none":
            plan = plan_for(leaves)
            return plan.take_dynamic(leaves), CallKey(treedef, plan, plan.take_static(leaves))
        _, static = split(leaves)
        start, stop = kept = undonated_range(self.donate, self.fun, args)
        kept_values, donated = [], []
        for i, (x, s) in enumerate(zip(leaves, static)):
            if s is DYNAMIC:
                (kept_values if start <= i < stop else donated).append(x)
        return kept_values, donated, _DonationKey(treedef, static, kept)

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
                _reraise_clearly(e, key.treedef, key._marked_static(), (fun, args, kwargs))
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
                _reraise_clearly(e, key.treedef, key.static, (self.fun, args, kwargs))
                raise
        return out_static.unflatten(out)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        # A pytree, so that a transformed method passed on to other transformations
        # keeps its instance's arrays visible.
        return bind_partial(self, instance)

    def lower(self, *args: Any, **kwargs: Any) -> _Lowered:
        """Lower for these arguments ahead of time (`jax.jit(...).lower` for filter_jit).

        **Returns:** an object with `.compile()`, `.as_text()` and the rest of
        `jax.stages.Lowered`; the compiled object is called with the same arguments
        (static ones included) as the wrapper itself.
        """
        call_args = self._prepare(args, kwargs)
        lowered = self.jitted.lower(*call_args)
        return _Lowered(lowered, self, _signature(args, kwargs), call_args[-1])

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


def _reraise_clearly(
    error: Exception, treedef: Any, static: tuple[Any, ...], call: tuple[Any, Any, Any]
) -> None:
    """Turn errors from inside the compiled call into ecliptic's own, clear ones."""
    reraise_runtime_error(error)
    if isinstance(error, ValueError) and "static arguments should be comparable" in str(error):
        raise unhashable_error(treedef, static, "filter_jit") from None
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
            what = f"{leaf.dtype}{list(leaf.shape)} array"
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


class _Lowered:
    def __init__(
        self, lowered: Any, wrapper: _JitWrapper, signature: list[tuple[str, str]], key: Any
    ):
        self._lowered = lowered
        self._wrapper = wrapper
        self._signature = signature
        self._key = key

    def compile(self, *args: Any, **kwargs: Any) -> _Compiled:
        compiled = self._lowered.compile(*args, **kwargs)
        return _Compiled(compiled, self._wrapper, self._signature, self._key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lowered, name)


class _Compiled:
    def __init__(
        self, compiled: Any, wrapper: _JitWrapper, signature: list[tuple[str, str]], key: Any
    ):
        self._compiled = compiled
        self._wrapper = wrapper
        self._signature = signature
        self._key = key

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        *call_args, key = self._wrapper._prepare(args, kwargs)
        if key != self._key:  # the static half is baked into the executable
            raise _aot_mismatch(self._signature, args, kwargs) or TypeError(
                "filter_jit(...).lower(...).compile(): called with different static "
                "arguments than it was lowered for; lower again for new ones."
            )
        try:
            out, out_static = self._compiled(*call_args)
        except Exception as e:
            reraise_runtime_error(e)
            if isinstance(e, TypeError):
                clear = _aot_mismatch(self._signature, args, kwargs)
                if clear is not None:
                    raise clear from None
            raise
        return out_static.unflatten(out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._compiled, name)


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
def filter_jit(*, donate: str = "none", **jitkwargs: Any) -> Callable[[_F], _F]: ...


@overload
def filter_jit(fun: _F, *, donate: str = "none", **jitkwargs: Any) -> _F: ...


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
    if not callable(fun):
        raise TypeError(f"filter_jit(fun): fun must be callable; got {fun!r}.")
    if donate == "none":
        jitted = jax.jit(_body, static_argnums=1, **jitkwargs)
    else:
        jitted = jax.jit(_body_donating, static_argnums=2, donate_argnums=1, **jitkwargs)
    wrapper = _JitWrapper(fun=fun, donate=donate, jitted=jitted, memo=CallMemo())
    return module_update_wrapper(wrapper, fun)


def is_filter_jitted(fun: Any) -> bool:
    """Whether ``fun`` was produced by `filter_jit` (used by the debugging tools)."""
    return isinstance(fun, _JitWrapper)
