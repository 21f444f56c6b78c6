"""Names of the Ray actors goka-ray creates, in one place.

Every actor is named and lives in the config's Ray namespace, so any driver (a notebook, the
CLI, the monitor) finds a group's coordinator, its partition actors and the view actors of a
table by name. Names are ``goka-ray/<group>/...`` for a group and ``goka-ray/view/<table>/...``
for views; nothing else in goka-ray spells them out.
"""

from __future__ import annotations

__all__ = ["coordinator_name", "standby_prefix", "view_actor_name", "worker_prefix"]


def coordinator_name(group: str) -> str:
    """The group's coordinator: ``goka-ray/<group>/coordinator``."""
    return f"goka-ray/{group}/coordinator"


def worker_prefix(group: str) -> str:
    """Prefix of the group's partition actors (a random suffix follows)."""
    return f"goka-ray/{group}/worker-"


def standby_prefix(group: str) -> str:
    """Prefix of the group's standby actors (``p<partition>-<suffix>`` follows)."""
    return f"goka-ray/{group}/standby-"


def view_actor_name(table: str, index: int, replicas: int) -> str:
    """The view actor ``index`` of ``replicas`` serving ``table``."""
    return f"goka-ray/view/{table}/{index}-of-{replicas}"
