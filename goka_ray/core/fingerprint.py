"""Fingerprints of a group graph and its code: what a running group is compared with.

A running group records the fingerprint of the graph it was started (or last upgraded) with.
Starting it again with a graph whose fingerprint differs never attaches silently: the driver
is told what changed, and how to replace the running code (a rolling upgrade, or stop and
start). The fingerprint is computed in the driver, from the code it imported, and is the
same in every process that imports the same code with the same Python version.

What is hashed (SHA-256 over a canonical JSON description), for every edge of the graph:
- its kind and topic (or table, or visitor name), and its plain options (error, decode and
  nil policies...);
- its codec: a goka-ray codec by its name; any other codec by its class's code and the
  instance's attributes;
- its callbacks (input, loop, visitor, update): the function's bytecode, constants, names,
  default arguments and closure values, and, through the global names its code uses, the
  code of the functions and classes and the values of the plain constants it reaches in the
  user's own modules (transitively; not in the standard library, installed packages or
  goka-ray, which are named only).
Not hashed: file names, line numbers, comments and docstrings (moving or documenting code
does not change what it does), the group's config (changed live with ``scale``), and the
``on_rebalance`` callback of a :class:`~goka_ray.Processor`.

Cloudpickle's bytes are not used: they hold file names and line numbers, and differ between
processes for the same code.
"""

from __future__ import annotations

import dataclasses
import dis
import enum
import functools
import hashlib
import json
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from goka_ray.core.graph import GroupGraph, Input, Join, Lookup, Output, Visitor

__all__ = ["GraphFingerprint", "fingerprint", "upgrade_problems"]

#: how deep attribute values of plain objects (codec state, closure values) are described
_MAX_DEPTH = 6
#: the part that holds a table's codec (an upgrade must keep it)
TABLE_CODEC = "Persist codec"


@dataclass(frozen=True)
class GraphFingerprint:
    """The fingerprint of a group graph and its code (see the module docstring).

    ``digest`` is a hex SHA-256 over every part; ``parts`` maps a part's name (e.g.
    ``"Input('clicks') callback"``) to the hex SHA-256 of that part alone, so two
    fingerprints can say what differs.
    """

    group: str
    digest: str
    parts: Mapping[str, str]

    @property
    def short(self) -> str:
        """The first 12 hex digits of the digest (what status and the CLI show)."""
        return self.digest[:12]

    def changes(self, new: GraphFingerprint) -> list[str]:
        """What differs from this fingerprint to ``new``, edge by edge, e.g.
        ``["Input('clicks') callback changed", "Output('alerts') added"]``."""
        old_edges = _by_edge(self.parts)
        new_edges = _by_edge(new.parts)
        out = []
        for edge in sorted(old_edges.keys() | new_edges.keys()):
            before, after = old_edges.get(edge), new_edges.get(edge)
            if before is None:
                out.append(f"{edge} added")
            elif after is None:
                out.append(f"{edge} removed")
            elif before != after:
                for aspect in sorted(before.keys() | after.keys()):
                    if before.get(aspect) != after.get(aspect):
                        out.append(f"{edge} {aspect} changed")
        return out


def _by_edge(parts: Mapping[str, str]) -> dict[str, dict[str, str]]:
    edges: dict[str, dict[str, str]] = {}
    for name, digest in parts.items():
        edge, _, aspect = name.rpartition(" ")
        edges.setdefault(edge, {})[aspect] = digest
    return edges


def upgrade_problems(running: GraphFingerprint, new: GraphFingerprint) -> list[str]:
    """Why a running group cannot be upgraded in place to ``new`` ([] if it can).

    The group's table must keep its codec: the values in ``<group>-table`` were encoded by the
    running one. A table cannot be added or removed by an upgrade. Topics are checked against
    Kafka by the coordinator (same partition count as the running group).
    """
    problems = []
    if running.group != new.group:
        problems.append(f"the new graph is group {new.group!r}, not {running.group!r}")
    before, after = running.parts.get(TABLE_CODEC), new.parts.get(TABLE_CODEC)
    if before is not None and after is None:
        problems.append(
            f"the new graph has no Persist edge: the table {running.group}-table would be orphaned"
        )
    elif before is None and after is not None:
        problems.append(f"the new graph adds a table (Persist) that {running.group} does not have")
    elif before != after:
        problems.append(
            f"the table codec changed: {running.group}-table holds values encoded by the "
            "running codec, which the new one may not read"
        )
    return problems


def fingerprint(graph: GroupGraph) -> GraphFingerprint:
    """The fingerprint of ``graph`` and its code (see the module docstring)."""
    parts: dict[str, str] = {}
    for edge in graph.edges:
        label = _edge_label(edge)
        options: dict[str, Any] = {}
        for f in dataclasses.fields(edge):
            value = getattr(edge, f.name)
            if f.name in ("topic", "table", "name"):
                continue  # part of the label
            if f.name == "codec":
                parts[f"{label} codec"] = _digest(_Describer(value).root())
            elif callable(value):
                parts[f"{label} {f.name}"] = _digest(_Describer(value).root())
            elif value is None or isinstance(value, str | int | float | bool | tuple):
                options[f.name] = value
            else:
                parts[f"{label} {f.name}"] = _digest(_Describer(value).root())
        parts[f"{label} options"] = _digest(options)
    ordered = dict(sorted(parts.items()))
    return GraphFingerprint(graph.group, _digest({"group": graph.group, "parts": ordered}), ordered)


def _edge_label(edge: object) -> str:
    if isinstance(edge, Input | Output):
        return f"{type(edge).__name__}({edge.topic!r})"
    if isinstance(edge, Join | Lookup):
        return f"{type(edge).__name__}({edge.table!r})"
    if isinstance(edge, Visitor):
        return f"Visitor({edge.name!r})"
    return type(edge).__name__


def _digest(description: Any) -> str:
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# -- describing code and values -------------------------------------------------------------


def _top(module: str | None) -> str:
    return (module or "").partition(".")[0]


def _is_library_top(top: str) -> bool:
    return not top or top in sys.stdlib_module_names or top in ("builtins", "goka_ray")


def _is_library(module: str | None) -> bool:
    """Code of the standard library, goka-ray or an installed package (named, not hashed)."""
    if _is_library_top(_top(module)):
        return True
    path = getattr(sys.modules.get(module or ""), "__file__", None) or ""
    return "site-packages" in path or "dist-packages" in path


class _Describer:
    """Turns an object into plain JSON data that stands for what it does."""

    def __init__(self, root: object) -> None:
        self._root = root
        module = getattr(root, "__module__", None) or getattr(type(root), "__module__", None)
        #: the package of the root callback: its own helpers are hashed even when installed
        self._package = "" if _is_library_top(_top(module)) else _top(module)
        self._path: set[int] = set()

    def root(self) -> Any:
        return self.describe(self._root, 0, force=True)

    def _user(self, module: str | None) -> bool:
        return not _is_library(module) or (bool(module) and _top(module) == self._package)

    def describe(self, obj: Any, depth: int, *, force: bool = False) -> Any:
        if obj is None or isinstance(obj, bool | int | str):
            return obj
        if isinstance(obj, float | complex | bytes | bytearray):
            return {"repr": repr(obj)}
        if isinstance(obj, enum.Enum):
            return {"enum": f"{type(obj).__module__}:{type(obj).__qualname__}.{obj.name}"}
        if isinstance(obj, tuple | list):
            return [self.describe(v, depth + 1) for v in obj]
        if isinstance(obj, frozenset | set):
            items = [self.describe(v, depth + 1) for v in obj]
            return {"set": sorted(items, key=lambda d: json.dumps(d, sort_keys=True))}
        if isinstance(obj, dict):
            return {
                "dict": sorted(
                    (
                        [self.describe(k, depth + 1), self.describe(v, depth + 1)]
                        for k, v in obj.items()
                    ),
                    key=lambda kv: json.dumps(kv, sort_keys=True),
                )
            }
        if isinstance(obj, types.CodeType):
            return self._code(obj, depth)
        if isinstance(obj, types.ModuleType):
            return {"module": obj.__name__}
        if id(obj) in self._path:
            return {"recursive": _name_of(obj)}
        self._path.add(id(obj))
        try:
            return self._object(obj, depth, force)
        finally:
            self._path.discard(id(obj))

    def _object(self, obj: Any, depth: int, force: bool) -> Any:
        """``force``: describe a function by its code wherever it comes from (the root)."""
        if isinstance(obj, types.FunctionType):
            if not (force or self._user(obj.__module__)):
                return {"function": _name_of(obj)}
            return self._function(obj, depth)
        if isinstance(obj, types.MethodType):
            return {
                "method": self.describe(obj.__func__, depth, force=force),
                "of": _name_of(type(obj.__self__)),
            }
        if isinstance(obj, functools.partial):
            return {
                "partial": self.describe(obj.func, depth, force=force),
                "args": self.describe(obj.args, depth + 1),
                "keywords": self.describe(obj.keywords, depth + 1),
            }
        if isinstance(obj, staticmethod | classmethod):
            return {type(obj).__name__: self.describe(obj.__func__, depth, force=force)}
        if isinstance(obj, property):
            return {"property": [self.describe(f, depth) for f in (obj.fget, obj.fset, obj.fdel)]}
        if isinstance(obj, type):
            if not self._user(obj.__module__):
                return {"type": _name_of(obj)}
            return self._class(obj, depth)
        if isinstance(obj, types.BuiltinFunctionType | types.BuiltinMethodType):
            return {"builtin": _name_of(obj)}
        return self._instance(obj, depth)

    def _instance(self, obj: Any, depth: int) -> Any:
        kind = type(obj)
        described: dict[str, Any] = {"instance": self.describe(kind, depth + 1)}
        if depth >= _MAX_DEPTH:
            return described
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            described["state"] = {
                str(k): self.describe(v, depth + 1)
                for k, v in sorted(state.items(), key=lambda kv: str(kv[0]))
            }
        return described

    def _function(self, fn: types.FunctionType, depth: int) -> Any:
        code = fn.__code__
        closure = [c.cell_contents if _cell_set(c) else None for c in fn.__closure__ or ()]
        return {
            "function": fn.__qualname__,
            "code": self._code(code, depth),
            "defaults": self.describe(fn.__defaults__, depth + 1),
            "kwdefaults": self.describe(fn.__kwdefaults__, depth + 1),
            "closure": [self.describe(v, depth + 1) for v in closure],
            "globals": self._globals(fn, depth),
        }

    def _globals(self, fn: types.FunctionType, depth: int) -> dict[str, Any]:
        """What the global names the function's code uses stand for (its module's helpers
        and constants; builtins and imports of other modules are named)."""
        out = {}
        namespace = fn.__globals__
        for name in sorted(_global_names(fn.__code__)):
            if name in namespace:
                out[name] = self.describe(namespace[name], depth + 1)
        return out

    def _code(self, code: types.CodeType, depth: int) -> Any:
        """The instructions with their arguments resolved (constants described, jump targets
        as offsets), so that neither the order of the constants table (a docstring shifts it)
        nor line numbers matter."""
        instructions = []
        for ins in dis.get_instructions(code):
            arg = ins.argval
            if not (arg is None or isinstance(arg, bool | int | str)):
                arg = self.describe(arg, depth + 1)
            instructions.append([ins.opname, arg])
        return {
            "instructions": instructions,
            "args": [code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount],
            "flags": code.co_flags,
            "exceptions": getattr(code, "co_exceptiontable", b"").hex(),
        }

    def _class(self, cls: type, depth: int) -> Any:
        members = {}
        for name, value in sorted(vars(cls).items()):
            if name in ("__dict__", "__weakref__", "__module__", "__doc__", "__qualname__"):
                continue
            if (
                name.startswith("__")
                and not callable(value)
                and not isinstance(value, staticmethod | classmethod | property)
            ):
                continue  # dataclass fields, slots, annotations: implied by the code
            members[name] = self.describe(value, depth + 1)
        return {
            "class": cls.__qualname__,
            "bases": [_name_of(b) for b in cls.__bases__],
            "members": members,
        }


def _cell_set(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _name_of(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or ""
    name = (
        getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    )
    return f"{module}:{name}"
