"""How a call's objects travel between the caller and a fresh interpreter
(spawn and forkserver): plain pickle whenever it reproduces every object,
cloudpickle otherwise.

Plain pickle sends a function or a class by reference (its module and
qualified name), which the other side imports. That reproduces the object
only when the name leads back to this very object in a module the other
side can import. Everything else travels by value with cloudpickle, which is
imported only then: lambdas, closures, what a main script defines
(``__main__``, or ``__mp_main__`` in a multiprocessing worker), a decorated
function whose name leads to its wrapper, and modules registered with
``cloudpickle.register_pickle_by_value``. The other side reads both with
plain ``pickle.loads``: a pickle made by cloudpickle names cloudpickle's
helpers, and unpickling it imports cloudpickle there.

Plain data (builtin scalars and containers only) travels by ``marshal``
instead, which every interpreter has loaded at start-up: a spawned call of a
function importable by reference, with such arguments and result, loads no
pickler at all. Where a pickler is needed, this module uses the C pickler
``_pickle`` directly: ``pickle`` would also import ``re`` and ``enum``.
"""

from __future__ import annotations

import io
import marshal
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _pickle import PickleBuffer
    from typing import Any, ClassVar, Optional

PROTOCOL = 5


# The C pickler, imported on first use (a spawned call of plain data never
# needs it) and then kept: an import statement in each call would cost a
# forked child a copy-on-write fault for each page the import machinery
# writes.
_c_pickle: Any = None


def _import_pickle() -> Any:
    global _c_pickle
    import _pickle

    _c_pickle = _pickle
    return _pickle


def loads(data: Any, buffers: Any = ()) -> Any:
    """Plain ``pickle.loads``."""
    return (_c_pickle or _import_pickle()).loads(data, buffers=buffers)


# The modules a fresh interpreter cannot import: the caller's main script.
_MAIN_SCRIPTS = ("__main__", "__mp_main__")


def dumps(obj: Any, buffers: Optional[list[PickleBuffer]] = None) -> bytes:
    """Plain pickle, protocol 5; with ``buffers``, out-of-band buffers are
    appended there instead of copied into the pickle."""
    pickled: bytes = (_c_pickle or _import_pickle()).dumps(
        obj, protocol=PROTOCOL, buffer_callback=None if buffers is None else buffers.append
    )
    return pickled


def _registered_by_value() -> list[str]:
    """The modules cloudpickle was told to send by value; none before
    cloudpickle is imported."""
    cloudpickle = sys.modules.get("cloudpickle")
    return [] if cloudpickle is None else sorted(cloudpickle.list_registry_pickle_by_value())


def registered_by_value(module_name: str) -> bool:
    """Whether cloudpickle was told to send the module ``module_name`` (or a
    package it is in) by value."""
    registered = _registered_by_value()
    parts = module_name.split(".")
    return any(".".join(parts[:n]) in registered for n in range(1, len(parts) + 1))


def by_reference(obj: Any) -> bool:
    """Whether the function or class ``obj`` travels by reference: its
    qualified name leads to this very object in its module, which is
    imported here and is not a main script, and cloudpickle was not told to
    send the module by value (cloudpickle decides the same way)."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        return False
    module = sys.modules.get(module_name)
    if module is None or module_name in _MAIN_SCRIPTS or module.__name__ in _MAIN_SCRIPTS:
        return False
    found: Any = module
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return False
    return found is obj and not registered_by_value(module.__name__)


# The exact types marshal reads back as themselves (a subclass, or another
# object with a buffer, it would turn into its base type), and the most
# objects checked before pickle, as good for big data, is used instead.
_MARSHAL_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes, type(...)})
_MARSHAL_CONTAINERS = frozenset({tuple, list, dict, set, frozenset})
_MARSHAL_MOST = 10_000
_MARSHAL_DEPTH = 100


def plain(obj: Any, most: int = _MARSHAL_MOST) -> bool:
    """Whether ``obj`` is plain data that marshal reads back exactly: builtin
    scalars and containers, no cycle, at most ``most`` objects."""
    budget = [most]

    def check(item: Any, depth: int) -> bool:
        budget[0] -= 1
        kind = type(item)
        if kind in _MARSHAL_SCALARS:
            return budget[0] >= 0
        if kind not in _MARSHAL_CONTAINERS or depth > _MARSHAL_DEPTH or budget[0] < 0:
            return False
        if kind is dict:
            return all(check(k, depth + 1) and check(v, depth + 1) for k, v in item.items())
        return all(check(element, depth + 1) for element in item)

    return check(obj, 0)


def marshalled(obj: Any, most: Optional[int] = None) -> Optional[bytes]:
    """``obj`` as marshal data if it is `plain` (with at most ``most``
    objects, by default as many as `plain` allows), else None."""
    if not plain(obj, _MARSHAL_MOST if most is None else most):
        return None
    try:
        return marshal.dumps(obj)
    except ValueError:
        return None


def unmarshal(data: Any) -> Any:
    return marshal.loads(data)


def find(module_name: str, qualname: str) -> Any:
    """The object a reference names, found as plain pickle finds it."""
    __import__(module_name)
    found = sys.modules[module_name]
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class _NeedsCloudpickle(Exception):
    pass


_plain_pickler: Optional[type] = None


def _plain_pickler_class() -> type:
    global _plain_pickler
    if _plain_pickler is None:
        import _pickle

        class _PlainPickler(_pickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                # Called for every object but the builtin scalars and
                # containers; a function or class that would not come back
                # as itself stops plain pickle here.
                if isinstance(obj, (types.FunctionType, type)) and not by_reference(obj):
                    raise _NeedsCloudpickle
                return NotImplemented

        _plain_pickler = _PlainPickler
    return _plain_pickler


def dumps_for_interpreter(
    obj: Any,
    buffers: Optional[list[PickleBuffer]] = None,
    *,
    refuse_open_files: bool = False,
) -> bytes:
    """Pickle ``obj`` for a fresh interpreter: plain pickle if it reproduces
    every object, else cloudpickle (see the module's doc). Out-of-band
    buffers go to ``buffers``, as in `dumps`.

    ``refuse_open_files`` refuses an open text file as plain pickle does,
    instead of letting cloudpickle turn it into a ``StringIO`` snapshot.

    An object that plain pickle cannot pickle is pickled again by
    cloudpickle, so a ``__reduce__`` with side effects may run twice.
    """
    attempt: list[PickleBuffer] = []
    out = io.BytesIO()
    try:
        _plain_pickler_class()(
            out, protocol=PROTOCOL, buffer_callback=None if buffers is None else attempt.append
        ).dump(obj)
    except MemoryError:
        raise
    except Exception:
        pass
    else:
        data = out.getvalue()
        # An object whose reduction names a global of a main script or of a
        # module sent by value (a TypeVar of __main__, say) is no function or
        # class, so reducer_override let it through: its name is in the
        # pickle. (A string that merely contains it costs a cloudpickle.)
        names = [b"__main__", b"__mp_main__"]
        names += [name.encode() for name in _registered_by_value()]
        if not any(name in data for name in names):
            if buffers is not None:
                buffers.extend(attempt)
            return data
    del out, attempt
    return _cloudpickle_dumps(obj, buffers, refuse_open_files)


_file_refusing_pickler: Optional[type] = None


def _refuse_open_file(file: Any) -> Any:
    # What plain pickle says, so the error reads the same in every context.
    raise TypeError(f"cannot pickle '{type(file).__module__}.{type(file).__qualname__}' object")


def _cloudpickle_dumps(
    obj: Any, buffers: Optional[list[PickleBuffer]], refuse_open_files: bool
) -> bytes:
    global _file_refusing_pickler
    import cloudpickle

    # Inside a multiprocessing worker started by spawn or forkserver, the
    # main script is the module __mp_main__, which no fresh interpreter can
    # import: its functions and classes travel by value, as __main__'s do
    # (and its classes come back as the caller's own).
    main = sys.modules.get("__mp_main__")
    if main is not None and main.__name__ == "__mp_main__":
        cloudpickle.register_pickle_by_value(main)
    pickler = cloudpickle.Pickler
    if refuse_open_files:
        if _file_refusing_pickler is None:
            from collections import ChainMap

            class _FileRefusingPickler(cloudpickle.Pickler):  # type: ignore[misc]
                dispatch_table: ClassVar[Any] = ChainMap(
                    {io.TextIOWrapper: _refuse_open_file}, cloudpickle.Pickler.dispatch_table
                )

            _file_refusing_pickler = _FileRefusingPickler
        pickler = _file_refusing_pickler
    out = io.BytesIO()
    pickler(
        out, protocol=PROTOCOL, buffer_callback=None if buffers is None else buffers.append
    ).dump(obj)
    return out.getvalue()
