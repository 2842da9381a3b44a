import warnings

import jax
import jax.numpy as jnp
import pytest

import ecliptic as ec


class Status(ec.Enumeration):
    ok = "all good"
    failed = "it failed"


class MoreStatus(Status):  # pyright: ignore[reportGeneralTypeIssues]
    pending = "not yet"


class Colour(ec.Enumeration):
    red = "red"
    failed = "colour failed"


def test_members_compare_and_describe():
    assert bool(Status.ok == Status.ok) and not bool(Status.ok == Status.failed)
    assert bool(Status.ok != Status.failed)
    assert Status[Status.failed] == "it failed" and Status.ok.name == "ok"
    assert len(Status) == 2 and [m.name for m in Status] == ["ok", "failed"]
    assert repr(Status.failed) == f"{__name__}.Status<it failed>"
    assert isinstance(Status.ok, Status)
    # exact enumeration only: a parent's member is not an instance of the child, nor back
    assert not isinstance(Status.ok, MoreStatus) and not isinstance(MoreStatus.ok, Status)
    assert not Status.ok.is_traced()


def test_comparison_needs_the_same_enumeration():
    for other in (0, "ok", None, Colour.failed, MoreStatus.ok):
        with pytest.raises(ValueError, match="same type"):
            _ = Status.ok == other
        with pytest.raises(ValueError, match="same type"):
            _ = Status.ok != other


def test_getitem_takes_only_own_members():
    for bad in (0, "ok", MoreStatus.ok, Colour.red):
        with pytest.raises(ValueError, match="(?i)enumeration item"):
            _ = Status[bad]  # pyright: ignore[reportArgumentType]


def test_where_under_jit():
    pick = jax.jit(lambda x: Status.where(x > 0, Status.ok, Status.failed))
    assert pick(jnp.array(1.0)).name == "ok" and pick(jnp.array(-1.0)).name == "failed"
    assert bool(jax.jit(lambda s: s == Status.failed)(Status.failed))


def test_where_stays_concrete_when_the_choice_is_known():
    @jax.jit
    def run(flag, member):
        known = Status.where(True, Status.ok, Status.failed)
        assert not known.is_traced() and bool(known == Status.ok)
        assert not Status.where(flag, Status.ok, Status.ok).is_traced()
        assert Status.where(flag, member, member) is member
        chosen = Status.where(flag, Status.ok, Status.failed)
        assert chosen.is_traced() and repr(chosen).endswith("Status<traced>")
        return chosen

    assert run(jnp.array(False), Status.ok).name == "failed"


def test_where_rejects_bad_arguments():
    with pytest.raises(ValueError, match="must be members"):
        Status.where(True, Status.ok, MoreStatus.pending)
    with pytest.raises(ValueError, match="must be members"):
        Status.where(True, Status.ok, Colour.red)
    for pred in (1, 1.0, jnp.array([True, False])):
        with pytest.raises(ValueError, match="scalar boolean"):
            Status.where(pred, Status.ok, Status.failed)


def test_batched_repr_lists_messages():
    batch = jax.vmap(lambda f: Status.where(f, Status.ok, Status.failed))(jnp.array([True, False]))
    assert repr(batch).endswith("Status<['all good' 'it failed']>")


def test_inheritance_and_promote():
    assert len(MoreStatus) == 3
    promoted = MoreStatus.promote(Status.failed)
    assert bool(promoted == MoreStatus.failed) and isinstance(promoted, MoreStatus)
    with pytest.raises(ValueError, match="inherited"):
        MoreStatus.promote(MoreStatus.ok)
    with pytest.raises(ValueError, match="inherited"):
        Status.promote(MoreStatus.ok)
    with pytest.raises(ValueError, match="promote enumerations"):
        MoreStatus.promote(0)  # pyright: ignore[reportArgumentType]


def test_promote_maps_by_name_through_several_parents():
    class First(ec.Enumeration):
        shared = "s"
        only_first = "f"

    class Second(ec.Enumeration):
        shared = "s"
        only_second = "g"

    class Both(First, Second):  # pyright: ignore[reportGeneralTypeIssues]
        own = "o"

    assert [m.name for m in Both] == ["shared", "only_first", "only_second", "own"]
    # Second.only_second has index 1 in Second but 2 in Both
    assert Both.promote(Second.only_second).name == "only_second"
    traced = jax.jit(Both.promote)(Second.only_second)
    assert traced.name == "only_second"


def test_redeclared_member_warns_only_when_the_message_changes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Same(Status):  # pyright: ignore[reportGeneralTypeIssues]
            ok = "all good"

    assert len(Same) == 2
    with pytest.warns(UserWarning, match="duplicate incompatible"):

        class Changed(Status):  # pyright: ignore[reportGeneralTypeIssues]
            ok = "fine"

    assert Changed[Changed.ok] == "fine"


def test_error_if_raises_the_member_message():
    token = jnp.array(1.0)
    assert Status.failed.error_if(token, False) is not None
    with pytest.raises(Exception, match="it failed"):
        Status.failed.error_if(token, True)

    @ec.filter_jit
    def check(flag, x):
        return Status.where(flag, Status.ok, Status.failed).error_if(x, x < 0)

    check(jnp.array(False), jnp.array(1.0)).block_until_ready()
    with pytest.raises(Exception, match="all good"):
        check(jnp.array(True), jnp.array(-1.0)).block_until_ready()
    with pytest.raises(Exception, match="it failed"):
        check(jnp.array(False), jnp.array(-1.0)).block_until_ready()


def test_errors():
    with pytest.raises(AttributeError, match="members"):
        _ = Status.missing  # pyright: ignore[reportAttributeAccessIssue]
    with pytest.raises(TypeError, match="string"):

        class Bad(ec.Enumeration):
            a = 1
