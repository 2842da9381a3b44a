"""The outputs of chosen submodules, from any call of a model, returned functionally.

`intermediates(model, where)` returns a copy of the model (a Module, so it goes through
`filter_jit`, `filter_grad` and `filter_vmap` like any model) whose selected submodules
are wrapped by recorders; calling it returns `(output, captured)`.

No mutation: the call opens a *collector* that lives only for that call (a thread-local
stack entry, popped on exit whatever happens); each recorder hands its output to the
innermost collector of its own capture, and the call returns the values as ordinary
outputs, traced at the same level as the call's own output, so they leave any
transformation with it. Inside `nn.Stacked` (a `lax.scan`), a per-step collector in the
scan body returns them as the scan's per-layer outputs, stacked. A recorder reached from
inside any other transformation within the model (e.g. a `jax.vmap` in a layer's forward
pass) cannot hand its value out and raises a clear error instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax.tree_util as jtu
from jax.extend.core import get_opaque_trace_state

from .._checks import check_callable
from .._filters import is_array
from .._messages import short_repr
from .._module import Module, field
from .._paths import children_with_names, dotted
from .._tree import tree_at
from ..nn import Stacked, StatefulLayer
from ..nn._stacked_scan import run_stacked
from ..nn._stateful import MISSING_STATE

__all__ = ["Intermediates", "intermediates"]

# .stack: the open collectors, innermost last. Module-level state, but safe: it is
# per thread, holds only what calls in progress on that thread pushed, and `_collecting`
# (a context manager) always pops what it pushed, so it is empty between calls and
# there is nothing for `clear_caches()` to drop.
_LOCAL = threading.local()


class _Collector:
    def __init__(self, token: int):
        self.token = token
        self.trace = get_opaque_trace_state(convention="flax")
        self.values: dict[int, list[Any]] = {}


@contextlib.contextmanager
def _collecting(token: int) -> Iterator[_Collector]:
    stack = _LOCAL.__dict__.setdefault("stack", [])
    collector = _Collector(token)
    stack.append(collector)
    try:
        yield collector
    finally:
        stack.pop()


def _innermost(token: int) -> _Collector | None:
    for collector in reversed(_LOCAL.__dict__.get("stack", ())):
        if collector.token == token:
            return collector
    return None


class _Recorder(StatefulLayer):
    """A submodule whose outputs are handed to the open collector of capture `token`.
    (A `StatefulLayer` answering as the module does, so `Sequential` passes it the
    state.)"""

    module: Any
    slot: int = field(static=True)
    name: str = field(static=True)
    token: int = field(static=True)

    def is_stateful(self) -> bool:
        return isinstance(self.module, StatefulLayer) and bool(self.module.is_stateful())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.module(*args, **kwargs)
        collector = _innermost(self.token)
        if collector is not None:
            if get_opaque_trace_state(convention="flax") != collector.trace:
                raise ValueError(
                    f"intermediates: {self.name!r} is called inside a JAX transformation "
                    "within the model's forward pass (a jax.vmap, lax.scan, jit, ... other "
                    "than nn.Stacked's), so its output cannot be returned from there. "
                    "Capture the module that applies that transformation instead."
                )
            collector.values.setdefault(self.slot, []).append(out)
        return out

    def __getattr__(self, name: str) -> Any:
        # Reached only for names the recorder lacks: the wrapped module's fields.
        if name.startswith("__") or name == "module":
            raise AttributeError(name)
        return getattr(self.__dict__["module"], name)


def _is_recorder(x: Any) -> bool:
    return isinstance(x, _Recorder)


def _has_recorder(tree: Any) -> bool:
    return any(_is_recorder(x) for x in jtu.tree_leaves(tree, is_leaf=_is_recorder))


class _ScanRecorder(StatefulLayer):
    """An `nn.Stacked` whose layers hold recorders: the same scan, with each layer's
    captured values returned from the scan body (so they come out stacked)."""

    stacked: Stacked
    token: int = field(static=True)

    def is_stateful(self) -> bool:
        return self.stacked.is_stateful()

    def __call__(
        self, x: Any, state: Any = MISSING_STATE, *, key: Any = None, **kwargs: Any
    ) -> Any:
        def capture(run_layer: Callable[[], Any]) -> tuple[Any, Any]:
            with _collecting(self.token) as collector:
                result = run_layer()
            return result, collector.values

        result, captured = run_stacked(self.stacked, x, state, key, kwargs, capture)
        outer = _innermost(self.token)
        if outer is not None:
            for slot, per_call in captured.items():
                outer.values.setdefault(slot, []).extend(per_call)
        return result

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "stacked":
            raise AttributeError(name)
        return getattr(self.__dict__["stacked"], name)

    def __len__(self) -> int:
        return len(self.stacked)


def _scan_recorders(model: Any, token: int) -> Any:
    """`model` with every `Stacked` that holds recorders replaced by a `_ScanRecorder`."""

    def is_stacked(x: Any) -> bool:
        return isinstance(x, Stacked)

    def convert(node: Any) -> Any:
        if isinstance(node, Stacked) and _has_recorder(node.layers):
            layers = _scan_recorders(node.layers, token)
            return _ScanRecorder(tree_at(lambda s: s.layers, node, layers), token)
        return node

    return jtu.tree_map(convert, model, is_leaf=is_stacked)


def _node_at(model: Any, name: str) -> Any:
    node, walked = model, []
    for part in name.split("."):
        children = dict(children_with_names(node)[0]) if not is_array(node) else {}
        if part not in children:
            here = ".".join(walked) or "the model"
            raise ValueError(
                f"intermediates: where names {name!r}, but {here} has no entry {part!r} "
                f"(it has: {', '.join(children) or 'nothing'})."
            )
        node = children[part]
        walked.append(part)
    return node


class Intermediates(Module):
    """A model whose calls also return the outputs of chosen submodules.

    Built by `intermediates`. Calling it as the model returns `(output, captured)`.
    """

    model: Any
    names: tuple[str, ...] = field(static=True)
    kind: str = field(static=True)
    token: int = field(static=True)

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """**Arguments:** as for the model. **Returns:** `(output, captured)`."""
        with _collecting(self.token) as collector:
            out = self.model(*args, **kwargs)
        missing = [n for i, n in enumerate(self.names) if not collector.values.get(i)]
        if missing:
            raise ValueError(
                "intermediates: these selected submodules were never called by the model: "
                f"{', '.join(repr(n) for n in missing)}. (Is the call going through another "
                "attribute, or a submodule that the forward pass skips?)"
            )
        values = []
        for i in range(len(self.names)):
            calls = collector.values[i]
            values.append(calls[0] if len(calls) == 1 else tuple(calls))
        if self.kind == "dict":
            return out, dict(zip(self.names, values))
        if self.kind == "single":
            return out, values[0]
        return out, (list(values) if self.kind == "list" else tuple(values))


def _depth(model: Any) -> int:
    tokens = [
        leaf.token for leaf in jtu.tree_leaves(model, is_leaf=_is_recorder) if _is_recorder(leaf)
    ]
    return max(tokens, default=0) + 1


def intermediates(model: Any, where: Any) -> Intermediates:
    """Capture the outputs of chosen submodules, without changing the model's code.

    **Arguments:**

    - `model`: any callable model.
    - `where`: the submodules to capture, either
      - a function `model -> submodule or tuple/list of submodules`, as for `tree_at`
        (e.g. `lambda m: (m.conv1, m.conv2)`); or
      - a dotted name or a sequence of names as `named_parameters` spells their
        prefixes (`"conv1"`, `["blocks.layers", "head"]`).

    **Returns:** an `Intermediates` module: `out, captured = intermediates(model,
    where)(x)`, where `out` is the model's output and `captured` holds each selected
    submodule's output: one value for a single `where`, a tuple/list like `where`'s, or
    a dict name -> value for names. A submodule called several times in one call gives
    a tuple of its outputs in call order. Inside an `nn.Stacked`, each layer's output is
    stacked along a leading axis of size `n`.

    **Raises:** `ValueError` naming the entries that the call never reached.

    Works under `filter_jit`, `filter_grad` (gradients flow through captured values),
    `filter_vmap` and `nn.Stacked`; nothing is mutated.

    ```python
    out, feats = ecliptic.intermediates(model, where=lambda m: m.conv1)(x)
    out, caps = ecliptic.intermediates(model, where=["conv1", "conv2"])(x)
    ```
    """
    check_callable(model, "intermediates: model")
    if isinstance(where, str) or (
        isinstance(where, Sequence) and where and all(isinstance(w, str) for w in where)
    ):
        names = (where,) if isinstance(where, str) else tuple(where)
        kind = "dict"
        for name in names:
            _node_at(model, name)  # raises for unknown names

        def select(m: Any) -> Any:
            return tuple(_node_at(m, n) for n in names)
    elif callable(where):
        select, names, kind = where, (), ""
    else:
        raise TypeError(
            "intermediates: where must be a function model -> submodule(s), a dotted name "
            f"or a sequence of names; got {short_repr(where)}."
        )
    selected = select(model)
    if not kind:
        kind = {tuple: "tuple", list: "list"}.get(type(selected), "single")
    nodes = list(selected) if isinstance(selected, (tuple, list)) else [selected]
    if not nodes:
        raise ValueError("intermediates: where selected no submodules.")
    for node in nodes:
        if not callable(node):
            raise TypeError(
                f"intermediates: where must select callable submodules; it selected "
                f"{short_repr(node)}."
            )
    token = _depth(model)
    recorders = [_Recorder(n, i, "", token) for i, n in enumerate(nodes)]
    wrapped = tree_at(
        lambda m: tuple(select(m)) if kind != "single" else select(m),
        model,
        tuple(recorders) if kind != "single" else recorders[0],
    )
    if not names:
        names = _recorder_names(wrapped, token, len(nodes))
    wrapped = _name_recorders(wrapped, token, names)
    return Intermediates(_scan_recorders(wrapped, token), tuple(names), kind, token)


def _recorder_names(model: Any, token: int, count: int) -> tuple[str, ...]:
    found = [""] * count
    paths = jtu.tree_flatten_with_path(model, is_leaf=_is_recorder)[0]
    for path, leaf in paths:
        if _is_recorder(leaf) and leaf.token == token:
            found[leaf.slot] = dotted(path) or "<root>"
    return tuple(found)


def _name_recorders(model: Any, token: int, names: Sequence[str]) -> Any:
    def rename(n: Any) -> Any:
        if _is_recorder(n) and n.token == token:
            return _Recorder(n.module, n.slot, names[n.slot], token)
        return n

    return jtu.tree_map(rename, model, is_leaf=_is_recorder)
