"""What runs on a Ray cluster: find it, connect to it, find groups and views, reach their actors.

Which cluster a driver uses when it is not told (``find_cluster``), in this order:
  1. the address given (``--address`` in the CLI, ``address=`` in the API);
  2. ``RAY_ADDRESS``;
  3. the cluster that ``ray start --head`` on this machine recorded in Ray's temp dir
     (``<RAY_TMPDIR or /tmp>/ray/ray_current_cluster``), used only if this user wrote that
     file and the address answers.
Never any other Ray instance that happens to run on the machine (Ray's ``address="auto"``
attaches to the first one it finds in the process list, which may belong to another user or
to a test); those are named in the error instead, so the user can pick one with ``--address``.

The CLI and the web monitor never start a cluster of their own when they are asked about one
(``goka-ray status`` on a laptop without Ray says so, it does not start Ray).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from goka_ray.errors import GokaRayError, did_you_mean

__all__ = [
    "ClusterAddress",
    "NoClusterError",
    "UnknownGroupError",
    "connect",
    "coordinator",
    "ensure_ray",
    "find_cluster",
    "list_groups",
    "list_views",
    "start_local_ray",
]

logger = logging.getLogger(__name__)

_COORDINATOR = re.compile(r"^goka-ray/(?P<group>.+)/coordinator$")
_VIEW = re.compile(r"^goka-ray/view/(?P<table>.+)/\d+-of-\d+$")


class NoClusterError(GokaRayError):
    """No Ray cluster could be reached, or none was named and none was started here."""


class UnknownGroupError(GokaRayError):
    """No processor group of that name runs in the namespace."""


@dataclass(frozen=True)
class ClusterAddress:
    """A Ray cluster's address (the head's GCS ``host:port``) and how it was chosen."""

    address: str
    #: where the address came from: ``--address``, ``RAY_ADDRESS``, the ``ray start`` record,
    #: ``a local Ray started by this process`` or ``already connected``
    source: str

    def __str__(self) -> str:
        return f"{self.address} ({self.source})"


def _recorded_cluster_file() -> str:
    """Where ``ray start --head`` records the address of the cluster it started (Ray's rule)."""
    temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(temp, "ray", "ray_current_cluster")


def find_cluster(address: str | None = None) -> ClusterAddress | None:
    """The cluster to use by the rule above, or None when none was named or recorded.

    Raises NoClusterError when the ``ray start`` record exists but was written by another
    user (it is not used silently).
    """
    if address:
        return ClusterAddress(address, "--address")
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return ClusterAddress(env, "RAY_ADDRESS")
    record = _recorded_cluster_file()
    try:
        with open(record) as f:
            owner = os.fstat(f.fileno()).st_uid
            recorded = f.read().strip()
    except OSError:
        return None
    if not recorded:
        return None
    if owner != os.getuid():
        raise NoClusterError(
            f"the Ray cluster recorded in {record} ({recorded}) was started by another user; "
            "not using it. Pass --address (or set RAY_ADDRESS) to use it anyway, or start your "
            "own with `ray start --head`."
        )
    return ClusterAddress(recorded, f"started with `ray start`, recorded in {record}")


def _other_instances() -> list[str]:
    """GCS addresses of Ray instances running on this machine (from the process list)."""
    try:
        from ray._private.services import find_gcs_addresses

        return sorted(find_gcs_addresses())  # type: ignore[no-untyped-call]
    except Exception:  # a private API: only used to make an error message more helpful
        return []


def _no_cluster_named() -> NoClusterError:
    others = _other_instances()
    hint = (
        f" Ray instances running on this machine, not used unless named: {', '.join(others)}."
        if others
        else ""
    )
    return NoClusterError(
        "no Ray cluster named: pass --address HOST:PORT (the head's GCS port, 6379 by default), "
        "set RAY_ADDRESS, or start one on this machine with `ray start --head`." + hint
    )


def connect(
    namespace: str, address: str | None = None, *, logging_level: int = logging.INFO
) -> ClusterAddress:
    """Connect to a running Ray cluster chosen by ``find_cluster(address)``; never start one.

    Returns the address connected to and where it came from. Raises NoClusterError, saying
    how to start or name a cluster. ``logging_level`` is that of Ray's own ``ray`` logger in
    this process (the CLI passes ``logging.ERROR`` unless ``-v``).
    """
    import ray

    if ray.is_initialized():
        return _current()
    found = find_cluster(address)
    if found is None:
        raise _no_cluster_named()
    _probe(found)
    _init(found.address, namespace, logging_level)
    return found


def _current() -> ClusterAddress:
    import ray

    try:
        gcs = ray.get_runtime_context().gcs_address
    except Exception:
        gcs = "?"
    return ClusterAddress(str(gcs), "already connected")


def _init(address: str, namespace: str, logging_level: int) -> None:
    import ray

    with _quiet_token_notice():
        _use_token_if_present()
    try:
        with _ray_address(address):
            ray.init(
                address=address,
                namespace=namespace,
                log_to_driver=False,
                logging_level=logging_level,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise NoClusterError(
            f"no Ray cluster at {address!r} ({exc}). Start one with `ray start --head`, "
            "point RAY_ADDRESS (or --address) at a running cluster, or use `goka-ray run` "
            "which starts a local one."
        ) from exc


@contextlib.contextmanager
def _ray_address(address: str) -> Iterator[None]:
    """ray.init prefers RAY_ADDRESS over its argument; make the chosen address win."""
    before = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = before


@contextlib.contextmanager
def _quiet_token_notice() -> Iterator[None]:
    """Ray warns "token authentication is enabled for this Ray cluster" when we send the
    token on the user's behalf; that is not news to them, so it is not shown."""
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


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


def _probe(found: ClusterAddress) -> None:
    """Fail fast on a host:port nobody listens on (Ray itself retries for minutes)."""
    import socket

    target = found.address
    if target in ("auto", "local") or "://" in target or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except (OSError, ValueError) as exc:
        stale = (
            " The record is left by a cluster that has stopped; start one with "
            "`ray start --head`, or name another with --address."
            if found.source.startswith("started with")
            else " Check the address (the head's GCS port, 6379 by default), or start a "
            "cluster with `ray start --head`."
        )
        raise NoClusterError(
            f"no Ray cluster answers at {target!r} ({found.source}): {exc}.{stale}"
        ) from exc


def ensure_ray(
    namespace: str, *, num_cpus: int | None = None, logging_level: int = logging.INFO
) -> ClusterAddress:
    """Connect to the cluster ``find_cluster()`` names, else start a local Ray in this process.

    What ``Processor.start()`` and ``View.start()`` use when Ray is not initialised yet.
    """
    import ray

    if ray.is_initialized():
        return _current()
    found = find_cluster(None)
    if found is not None:
        _probe(found)
        _init(found.address, namespace, logging_level)
        return found
    return start_local_ray(namespace, num_cpus=num_cpus, logging_level=logging_level)


def start_local_ray(
    namespace: str, *, num_cpus: int | None = None, logging_level: int = logging.INFO
) -> ClusterAddress:
    """Start a Ray instance in this process (it ends with the process), without a dashboard;
    Ray's notice that it enabled token authentication is not shown."""
    import ray

    with _quiet_token_notice():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            namespace=namespace,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging_level,
        )
    return ClusterAddress(_current().address, "a local Ray started by this process")


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
            f"no processor group {group!r} in Ray namespace {namespace!r} ({hint})."
            f"{did_you_mean(group, running)} Start it with `goka-ray run MODULE:GRAPH`, or "
            "check --namespace."
        ) from None
