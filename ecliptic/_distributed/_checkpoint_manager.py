"""`CheckpointManager`: distributed, asynchronous, atomic checkpoints through Orbax.

Each checkpoint is one Orbax step directory holding two items: ``arrays`` (every array
leaf of the saved pytree, by dotted name, written by Orbax: each process writes only the
shards its devices own) and ``meta`` (JSON: the names, shapes and dtypes, and the
caller's metadata). Non-array leaves are not saved: restoring takes them from the
template (`like`), as `ecliptic.load` does.

Orbax writes a step into a temporary directory and renames it when every process has
finished (the rename is the commit), so a process killed mid-save leaves the previous
steps intact and the unfinished one invisible.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.tree_util as jtu
from jax.sharding import Mesh, SingleDeviceSharding

from .._checks import is_int
from .._filters import is_array
from .._io._arrays import is_key_dtype, key_data_struct, key_impl
from .._io._errors import CheckpointError
from .._paths import display, dotted
from .._sharding._placement import param_shardings

_FORMAT = "ecliptic-orbax-1"


def _orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise ImportError(
            "ecliptic.distributed.CheckpointManager needs Orbax: pip install "
            "'ecliptic[distributed]' (or orbax-checkpoint)."
        ) from e
    return ocp


def _is_leaf_struct(x: Any) -> bool:
    return is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _named_arrays(tree: Any, what: str) -> list[tuple[str, Any]]:
    named = []
    seen = set()
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        if not _is_leaf_struct(leaf):
            continue
        name = dotted(path)
        if name in seen:
            raise ValueError(f"{what}: two array leaves share the name {display(name)!r}.")
        seen.add(name)
        named.append((name, leaf))
    return named


def _describe(leaf: Any) -> dict[str, Any]:
    return {"shape": list(leaf.shape), "dtype": str(leaf.dtype)}


class CheckpointManager:
    """Save and restore pytrees of (possibly multi-process, sharded) arrays with Orbax.

    Every process of the job creates the manager with the same directory and calls
    `save` / `restore` at the same points (they synchronise). Each process writes only
    the shards its own devices hold, and reads only those it needs, so the layout on
    restore may differ from the one saved: another mesh, another number of devices or
    processes.

    **Arguments:**

    - `directory`: where the steps go (one sub-directory per step); created if missing.
        Every process must see the same directory (a shared file system, or a bucket
        path Orbax supports).
    - `max_to_keep`: keep only the latest this many steps (`None`: keep all).
    - `async_save`: if `True` (default), `save` returns once the arrays are copied off
        the devices and writes in the background, so training continues; call `wait`
        before reading the files or exiting. If `False`, `save` returns when the step is
        committed.

    ```python
    manager = ecliptic.distributed.CheckpointManager("/ckpt", max_to_keep=3)
    manager.save(step, {"model": model, "opt_state": opt_state})
    ...
    manager.wait()
    restored = manager.restore({"model": model, "opt_state": opt_state}, mesh=mesh,
                               rules=ecliptic.sharding.fsdp("data"))
    ```
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = None,
        async_save: bool = True,
    ):
        if max_to_keep is not None and (not is_int(max_to_keep) or max_to_keep < 1):
            raise ValueError(
                "CheckpointManager(max_to_keep=...) must be None or an int >= 1; got "
                f"{max_to_keep!r}."
            )
        ocp = _orbax()
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=bool(async_save),
            create=True,
            cleanup_tmp_directories=True,
        )
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            self.directory, item_names=("arrays", "meta"), options=options
        )

    # ------------------------------------------------------------------ saving

    def save(self, step: int, tree: Any, *, metadata: dict[str, Any] | None = None) -> None:
        """Save the array leaves of `tree` as checkpoint `step`.

        **Arguments:**

        - `step`: the step number (an int; steps must increase).
        - `tree`: any pytree, e.g. `{"model": model, "state": state, "opt_state":
            opt_state}`. Its arrays may span many processes.
        - `metadata`: JSON-serialisable data stored with the step (`metadata(step)`
            returns it).

        **Returns:** nothing. With `async_save=True` the write continues in the
        background; `wait()` blocks until it is committed.

        ```python
        manager.save(100, {"model": model, "opt_state": opt_state})
        ```
        """
        if not is_int(step) or step < 0:
            raise ValueError(f"CheckpointManager.save(step=...) must be an int >= 0; got {step!r}.")
        named = _named_arrays(tree, "CheckpointManager.save(tree=...)")
        arrays = {}
        meta = {"format": _FORMAT, "leaves": {}, "metadata": metadata or {}}
        for name, leaf in named:
            entry = _describe(leaf)
            if is_key_dtype(leaf.dtype):
                entry["key"] = True
                leaf = jax.random.key_data(leaf)
            elif not isinstance(leaf, jax.Array):
                leaf = jax.numpy.asarray(leaf)
            arrays[name] = leaf
            meta["leaves"][name] = entry
        args = self._ocp.args
        self._manager.save(
            int(step),
            args=args.Composite(arrays=args.StandardSave(arrays), meta=args.JsonSave(meta)),
        )

    def wait(self) -> None:
        """Block until every pending asynchronous save is committed (on every process).

        **Returns:** nothing.

        ```python
        manager.wait()
        ```
        """
        self._manager.wait_until_finished()

    # ------------------------------------------------------------------ reading

    def all_steps(self) -> list[int]:
        """The committed steps, oldest first (unfinished saves are not listed).

        **Returns:** a list of ints.

        ```python
        manager.all_steps()  # [80, 90, 100]
        ```
        """
        self._manager.reload()  # steps committed by other processes or managers
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest committed step, or `None` when there is none.

        **Returns:** an int or `None`.

        ```python
        step = manager.latest_step()
        ```
        """
        steps = self.all_steps()
        return steps[-1] if steps else None

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """What was stored with a step: `{"format", "leaves": {name: {"shape", "dtype"}},
        "metadata": ...}`.

        **Arguments:** `step`: the step (`None`: the latest).

        **Returns:** a dict.

        ```python
        manager.metadata()["metadata"]
        ```
        """
        step = self._resolve(step)
        args = self._ocp.args
        return self._manager.restore(step, args=args.Composite(meta=args.JsonRestore()))["meta"]

    def _resolve(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"CheckpointManager: no checkpoint in {self.directory!r}.")
            return steps[-1]
        if step not in steps:
            raise CheckpointError(
                f"CheckpointManager.restore(step=...): no committed step {step} in "
                f"{self.directory!r}; the steps are {steps}."
            )
        return int(step)

    def restore(
        self,
        like: Any,
        step: int | None = None,
        *,
        mesh: Mesh | None = None,
        rules: Any = None,
    ) -> Any:
        """Load a step into a pytree shaped like `like`, with its arrays placed on `mesh`.

        **Arguments:**

        - `like`: a pytree with the saved structure: real arrays, or
            `jax.ShapeDtypeStruct`s (e.g. from `ecliptic.filter_eval_shape`, so that the
            model is never built in full). Non-array leaves are taken from it.
        - `step`: the step to load (`None`: the latest committed one).
        - `mesh`, `rules`: where to put the arrays, as for `ecliptic.param_shardings`
            (the rules apply to the dotted names in `like`). Without `mesh`, each array
            takes the sharding of its template leaf (its `.sharding`), or lives on the
            first local device if it has none.

        **Returns:** the restored pytree.

        ```python
        abstract = ecliptic.filter_eval_shape(make_model, key)
        model = manager.restore(abstract, mesh=mesh, rules=ecliptic.sharding.fsdp("data"))
        ```
        """
        step = self._resolve(step)
        saved = self.metadata(step)
        if saved.get("format") != _FORMAT:
            raise CheckpointError(
                f"CheckpointManager.restore: step {step} in {self.directory!r} was not "
                f"written by ecliptic's CheckpointManager (format {saved.get('format')!r})."
            )
        named = _named_arrays(like, "CheckpointManager.restore(like=...)")
        self._check_names(saved["leaves"], named, step)
        shardings = param_shardings(like, mesh, rules) if mesh is not None else None
        flat_sh = (
            [s for s in jtu.tree_leaves(shardings, is_leaf=lambda x: x is None) if s is not None]
            if shardings is not None
            else [self._own_sharding(leaf) for _, leaf in named]
        )
        targets = {}
        for (name, leaf), sh in zip(named, flat_sh):
            if is_key_dtype(leaf.dtype):
                data = key_data_struct(leaf)
                targets[name] = jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sh)
            else:
                targets[name] = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sh)
        args = self._ocp.args
        restored = self._manager.restore(
            step, args=args.Composite(arrays=args.StandardRestore(targets))
        )["arrays"]
        values = iter(
            jax.random.wrap_key_data(restored[name], impl=key_impl(leaf))
            if is_key_dtype(leaf.dtype)
            else restored[name]
            for name, leaf in named
        )
        leaves, treedef = jtu.tree_flatten(like)
        return treedef.unflatten([next(values) if _is_leaf_struct(x) else x for x in leaves])

    @staticmethod
    def _own_sharding(leaf: Any) -> Any:
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None:
            return sharding
        return SingleDeviceSharding(jax.local_devices()[0])

    def _check_names(self, saved: dict[str, Any], named: list[tuple[str, Any]], step: int) -> None:
        wanted = {name: _describe(leaf) for name, leaf in named}
        missing = sorted(set(wanted) - set(saved))
        extra = sorted(set(saved) - set(wanted))
        if missing or extra:
            raise CheckpointError(
                f"CheckpointManager.restore: step {step} does not match like=...: "
                f"missing from the checkpoint {[display(n) for n in missing]}, not in "
                f"like {[display(n) for n in extra]}."
            )
        for name, want in wanted.items():
            have = {"shape": saved[name]["shape"], "dtype": saved[name]["dtype"]}
            if have != want:
                raise CheckpointError(
                    f"CheckpointManager.restore: leaf {display(name)!r} of step {step} has "
                    f"shape {tuple(have['shape'])} and dtype {have['dtype']}; like=... "
                    f"expects shape {tuple(want['shape'])} and dtype {want['dtype']}."
                )

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Wait for pending saves, then release Orbax's resources.

        **Returns:** nothing.

        ```python
        manager.close()
        ```
        """
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
