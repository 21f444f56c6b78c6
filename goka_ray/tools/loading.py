"""Find the group graph a command names as ``MODULE:NAME`` (``goka-ray run``, ``topics check``).

Every way this can go wrong ends in one ConfigError or GraphError line that says what to fix:
no colon, a module that is missing or fails to import (syntax error, an exception at import
time, a missing dependency), a name the module does not define, a callback instead of a graph,
a factory that raises or returns something else.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import Any

from goka_ray.core.graph import GroupGraph
from goka_ray.errors import ConfigError, GraphError, did_you_mean

__all__ = ["load_graph"]


def load_graph(target: str) -> GroupGraph:
    """Import ``MODULE:NAME``; NAME is a GroupGraph or a function without arguments returning one.

    The current directory is importable, as with ``python -m``. Callbacks of a module that is
    not installed travel to the actors by value.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{target!r}: expected MODULE:NAME, e.g. myapp.flows:counter "
            "(NAME is a GroupGraph or a function returning one)"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    graphs = sorted(n for n, v in vars(module).items() if isinstance(v, GroupGraph))
    defines = f" Group graphs it defines: {', '.join(graphs)}." if graphs else ""
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ConfigError(
            f"module {module_name!r} has no {attr!r}.{did_you_mean(attr, vars(module))}{defines}"
        ) from None
    if callable(obj) and not isinstance(obj, GroupGraph):
        obj = _call_factory(target, obj, defines)
    if not isinstance(obj, GroupGraph):
        raise GraphError(
            f"{target} is a {type(obj).__name__}, not a GroupGraph; point at the result of "
            f"define_group(...) or at a function that returns one.{defines}"
        )
    _ship_by_value(module)
    return obj


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise ConfigError(
                f"cannot import module {module_name!r}: no such module in {os.getcwd()} or the "
                "installed packages. Run goka-ray from the directory that contains it, or "
                "install it in this environment."
            ) from None
        raise ConfigError(
            f"cannot import module {module_name!r}: it imports {exc.name!r}, which is not "
            "installed in this environment (pip install it, or activate the right venv)"
        ) from None
    except SyntaxError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r}: syntax error in {exc.filename}, "
            f"line {exc.lineno}: {exc.msg}"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"cannot import module {module_name!r}: importing it raised "
            f"{type(exc).__name__}: {exc} ({_where(exc)})"
        ) from None


def _call_factory(target: str, factory: Any, defines: str) -> Any:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        required = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            what = "a callback" if len(required) == 2 else "a function"
            raise GraphError(
                f"{target} is {what} taking ({', '.join(required)}), not a group graph: point "
                f"at the result of define_group(...) (or a function without arguments that "
                f"returns one), not at a callback.{defines}"
            )
    try:
        return factory()
    except Exception as exc:
        raise GraphError(f"{target}() raised {type(exc).__name__}: {exc} ({_where(exc)})") from None


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of the user's code that raised ``exc``."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "importlib" not in f.filename and f.filename != __file__]
    if not (ours or frames):
        return "unknown location"
    frame = (ours or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"


def _ship_by_value(module: Any) -> None:
    """Callbacks of a module that is not installed travel to the actors by value."""
    from ray import cloudpickle  # Ray's own copy: the one that pickles actor arguments

    path = getattr(module, "__file__", None) or ""
    if "site-packages" not in path and "dist-packages" not in path:
        cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]
