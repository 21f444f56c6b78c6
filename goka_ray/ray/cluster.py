"""What runs on a Ray cluster: connect to it, find groups and views, reach their actors.

Used by the CLI and the web monitor, which must never start a cluster of their own when they
are asked about one (``goka-ray status`` on a laptop without Ray should say so, not start Ray).
"""

from __future__ import annotations

import os
import re
from typing import Any

from goka_ray.errors import GokaRayError

__all__ = [
    "NoClusterError",
    "UnknownGroupError",
    "connect",
    "ensure_ray",
    "list_groups",
    "list_views",
]

_COORDINATOR = re.compile(r"^goka-ray/(?P<group>.+)/coordinator$")
_VIEW = re.compile(r"^goka-ray/view/(?P<table>.+)/\d+-of-\d+$")


class NoClusterError(GokaRayError):
    """No Ray cluster could be reached."""


class UnknownGroupError(GokaRayError):
    """No processor group of that name runs in the namespace."""


def connect(namespace: str, address: str | None = None) -> None:
    """Connect to a running Ray cluster (``address``, ``RAY_ADDRESS`` or the local one).

    Raises NoClusterError, saying how to start one, instead of starting a cluster.
    """
    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    _probe(target)
    _use_token_if_present()
    try:
        ray.init(address=target, namespace=namespace, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise NoClusterError(
            f"no Ray cluster at {target!r} ({exc}). Start one with `ray start --head`, "
            "point RAY_ADDRESS (or --address) at a running cluster, or use `goka-ray run` "
            "which starts a local one."
        ) from exc


def _use_token_if_present() -> None:
    """Send the local auth token to clusters given by address, as ``ray.init()`` does locally.

    Ray enables token auth on clusters it starts (``ray start``, a local ``ray.init``) but, when
    connecting by explicit address with ``RAY_AUTH_MODE`` unset, does not send the token from
    ``~/.ray/auth_token``; the cluster then answers "Authentication token is missing" for
    minutes. Ray caches the mode in its config, so setting the variable alone is not enough.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # an older Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _probe(target: str) -> None:
    """Fail fast on a host:port nobody listens on (Ray itself retries for minutes)."""
    import socket

    if target in ("auto", "local") or "://" in target or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except (OSError, ValueError) as exc:
        raise NoClusterError(
            f"no Ray cluster answers at {target!r} ({exc}). Check the address (the head's "
            "GCS port, 6379 by default), or start a cluster with `ray start --head`."
        ) from exc


def _named(namespace: str) -> list[str]:
    import ray

    names: list[Any] = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        entry["name"]
        for entry in names
        if isinstance(entry, dict) and entry.get("namespace") == namespace
    )


def list_groups(namespace: str) -> list[str]:
    """Names of the processor groups whose coordinator runs in ``namespace``."""
    return [m["group"] for n in _named(namespace) if (m := _COORDINATOR.match(n))]


def list_views(namespace: str) -> list[str]:
    """Tables served by view actors in ``namespace``."""
    return sorted({m["table"] for n in _named(namespace) if (m := _VIEW.match(n))})


def coordinator(group: str, namespace: str) -> Any:
    """The coordinator actor of a running group; UnknownGroupError lists the running ones."""
    import ray

    from goka_ray.control.names import coordinator_name

    try:
        return ray.get_actor(coordinator_name(group), namespace=namespace)
    except ValueError:
        running = list_groups(namespace)
        hint = f"running groups: {', '.join(running)}" if running else "no group is running"
        raise UnknownGroupError(
            f"no processor group {group!r} in Ray namespace {namespace!r} ({hint}); "
            "start it with `goka-ray run MODULE:GRAPH` or check --namespace"
        ) from None


def ensure_ray(namespace: str, *, num_cpus: int | None = None) -> None:
    """Connect to Ray: the cluster in ``RAY_ADDRESS`` or a running local one, else start one."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"namespace": namespace, "log_to_driver": False}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
        return
    try:
        ray.init(address="auto", **kwargs)
    except (ConnectionError, RuntimeError):
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
