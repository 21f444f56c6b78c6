"""Shared fixtures: one local broker for the whole session, unique names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from goka_ray.tools.local import LocalKafka


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    with LocalKafka() as broker:
        yield broker


@pytest.fixture
def unique() -> str:
    """A prefix for topic and group names: the broker is shared by every test."""
    return f"t{uuid.uuid4().hex[:10]}"
