"""Shared fixtures: one local broker for the whole session, unique names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import ray

from goka_ray.tools.local import LocalKafka


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    with LocalKafka() as broker:
        yield broker


@pytest.fixture
def unique() -> str:
    """A prefix for topic and group names: the broker is shared by every test."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def ray_local(request: pytest.FixtureRequest) -> Iterator[None]:
    """A local Ray of the test module's own (2 CPUs, namespace: the module's ``NAMESPACE``).

    ``address="local"``: without it ray.init joins any cluster started on this machine
    (another `ray start --head`) and refuses num_cpus.
    """
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace=request.module.NAMESPACE,
        log_to_driver=False,
    )
    yield
    ray.shutdown()
