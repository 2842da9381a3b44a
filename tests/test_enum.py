import jax
import jax.numpy as jnp
import pytest

import ecliptic as ec


class Status(ec.Enumeration):
    ok = "all good"
    failed = "it failed"


class MoreStatus(Status):
    pending = "not yet"


def test_members_compare_and_describe():
    assert bool(Status.ok == Status.ok) and not bool(Status.ok == Status.failed)
    assert bool(Status.ok != Status.failed)
    assert Status[Status.failed] == "it failed" and Status["ok"].name == "ok"
    assert len(Status) == 2 and [m.name for m in Status] == ["ok", "failed"]
    assert repr(Status.failed) == "Status.failed" and isinstance(Status.ok, Status)


def test_where_under_jit():
    pick = jax.jit(lambda x: Status.where(x > 0, Status.ok, Status.failed))
    assert pick(jnp.array(1.0)).name == "ok" and pick(jnp.array(-1.0)).name == "failed"
    assert bool(jax.jit(lambda s: s == Status.failed)(Status.failed))


def test_inheritance_and_promote():
    assert len(MoreStatus) == 3
    promoted = MoreStatus.promote(Status.failed)
    assert bool(promoted == MoreStatus.failed) and isinstance(promoted, MoreStatus)


def test_errors():
    with pytest.raises(AttributeError, match="members"):
        _ = Status.missing
    with pytest.raises(TypeError, match="string"):

        class Bad(ec.Enumeration):
            a = 1

    with pytest.raises(TypeError, match="not instantiated"):
        Status()

    class Other(ec.Enumeration):
        x = "x"

    with pytest.raises(ValueError, match="compare"):
        _ = Status.ok == Other.x
