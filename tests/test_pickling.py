"""What a call's objects travel by under spawn and forkserver (marshal for
plain data, plain pickle where it reproduces them, cloudpickle otherwise),
what a forked call's result travels by (marshal for small plain data, plain
pickle otherwise), and what a spawned child imports: only what its call
needs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lean_funcs import (
    Count,
    Point,
    PointError,
    echo,
    is_same,
    loaded_modules,
    make_point,
    refuse_point,
    type_names,
)

from pynisher import Pynisher

TESTS = Path(__file__).parent

# What pynisher's API and cloudpickle pull in, none of which a spawned call of
# a function of a module that imports only sys needs.
NOT_NEEDED = [
    "_pickle",
    "asyncio",
    "cloudpickle",
    "dataclasses",
    "multiprocessing",
    "pickle",
    "pynisher._api",
    "pynisher._executor",
    "pynisher._forkserver",
    "pynisher._outcome",
    "subprocess",
    "threading",
    "traceback",
    "typing",
]


def run_caller(code: str) -> str:
    """Runs ``code`` as a fresh caller that finds the test modules; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_spawned_child_imports_only_what_its_call_needs() -> None:
    loaded = Pynisher(loaded_modules, context="spawn")()
    assert "lean_funcs" in loaded
    assert [name for name in NOT_NEEDED if name in loaded] == []


def test_a_spawned_child_imports_a_pickler_for_what_is_not_plain_data() -> None:
    loaded = Pynisher(loaded_modules, context="spawn")(Point(1, 2))
    assert "_pickle" in loaded and "cloudpickle" not in loaded


def test_arguments_and_results_keep_their_exact_types(context: str) -> None:
    # Plain data travels by marshal, which would turn a subclass of a builtin
    # or a bytearray into the base type: those go by pickle. (A forked call
    # gets its arguments in its memory; only its result travels.)
    names = Pynisher(type_names, context=context)(
        True, Count(3), bytearray(b"x"), 1.5, b"b", None, flag=frozenset({1}), n=1j
    )
    assert names == [
        "bool",
        "Count",
        "bytearray",
        "float",
        "bytes",
        "NoneType",
        "flag=frozenset",
        "n=complex",
    ]
    plain = (None, True, 2**70, -0.0, 1j, "é\udcff", b"\0", [1, (2,)], {"k": {3}}, frozenset(), ...)
    assert Pynisher(echo, context=context)(plain) == plain
    for value in (Count(4), bytearray(b"y"), [Count(5)], {"k": bytearray()}):
        returned = Pynisher(echo, context=context)(value)
        assert returned == value and type(returned) is type(value)
    assert type(Pynisher(echo, context=context)([Count(5)])[0]) is Count
    # The same object twice in a result comes back as one object, by marshal
    # as by pickle.
    shared = [1, 2]
    pair = Pynisher(echo, context=context)((shared, shared))
    assert pair == (shared, shared) and pair[0] is pair[1]
    # Either side of the size up to which a forked call's plain result goes
    # by marshal (64 objects), and far beyond it.
    for size in (62, 63, 64, 1000):
        nested = {"values": list(range(size))}
        assert Pynisher(echo, context=context)(nested) == nested


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_an_argument_passed_twice_is_one_object_in_the_child(context: str) -> None:
    shared = [1, 2]
    assert Pynisher(is_same, context=context)(shared, shared) is True
    assert Pynisher(is_same, context=context)(shared, [1, 2]) is False


def test_a_spawned_child_imports_cloudpickle_for_a_lambda() -> None:
    loaded = Pynisher(lambda: loaded_modules(), context="spawn")()
    assert "cloudpickle" in loaded


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_objects_of_an_importable_module_travel_without_cloudpickle_in_the_caller(
    context: str,
) -> None:
    out = run_caller(
        f"""
        import sys
        import pynisher
        from lean_funcs import Point, PointError, make_point, refuse_point

        assert pynisher.Pynisher(make_point, context={context!r})(1, 2) == Point(1, 2)
        try:
            pynisher.Pynisher(refuse_point, context={context!r})(Point(3, 4))
        except PointError as e:
            assert e.args == (Point(3, 4),)
        print("cloudpickle" in sys.modules)
        """
    )
    assert out == "False"


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_results_and_errors_come_back_as_the_callers_own_classes(context: str) -> None:
    point = Pynisher(make_point, context=context)(5, 6)
    assert type(point) is Point and point == Point(5, 6)
    with pytest.raises(PointError) as caught:
        Pynisher(refuse_point, context=context)(point)
    assert type(caught.value) is PointError and caught.value.args == (point,)


def test_a_module_registered_by_value_still_travels_by_value() -> None:
    # cloudpickle.register_pickle_by_value: the child gets the function by
    # value and never imports its module.
    out = run_caller(
        """
        import cloudpickle
        import pynisher
        import lean_funcs

        cloudpickle.register_pickle_by_value(lean_funcs)
        print("lean_funcs" in pynisher.Pynisher(lean_funcs.loaded_modules, context="spawn")())
        """
    )
    assert out == "False"
