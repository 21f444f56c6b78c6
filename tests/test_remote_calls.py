"""Driver-side calls to an actor that Ray is restarting (goka_ray.ray.remote.call).

Ray raises ``ActorUnavailableError`` while it starts a dead actor's process again (for a
coordinator about 2-4 s). A call that may be repeated is sent again until its timeout; any
other raises UnavailableError at once, saying that Ray may or may not have carried it out.
The methods here stand in for an actor handle's method: ``.remote()`` fails the way
``ray.get`` of its result would, without a cluster.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from ray.exceptions import ActorUnavailableError

from goka_ray import UnavailableError
from goka_ray.ray import remote


class Restarting:
    """An actor method that is unavailable for its first ``down`` calls, then answers."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls = 0

    def remote(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls <= self.down:
            raise ActorUnavailableError("the actor is being restarted", None)
        return ("answer", args)


NAMESPACE = "goka-ray-remote-calls"


@pytest.fixture
def no_ray_get(monkeypatch: pytest.MonkeyPatch) -> None:
    # the answer is a plain value, not an object ref: get() hands it back as it is
    monkeypatch.setattr(remote, "get", lambda value, timeout=None: value)


def test_a_repeatable_call_is_sent_again_until_the_actor_answers(no_ray_get: None) -> None:
    method = Restarting(down=3)
    assert remote.call(method, 1, "x", timeout=10) == ("answer", (1, "x"))
    assert method.calls == 4


def test_a_repeatable_call_gives_up_at_its_timeout_naming_the_actor(no_ray_get: None) -> None:
    method = Restarting(down=10**6)
    started = time.monotonic()
    with pytest.raises(UnavailableError) as raised:
        remote.call(method, timeout=1.0, what="the coordinator of group 'clicks'")
    assert 0.7 <= time.monotonic() - started < 3
    message = str(raised.value)
    assert "the coordinator of group 'clicks' did not answer within 1s" in message
    assert "try again" in message
    assert method.calls >= 3


def test_a_call_that_changes_the_group_is_not_repeated(no_ray_get: None) -> None:
    method = Restarting(down=1)
    with pytest.raises(UnavailableError) as raised:
        remote.call(method, {"actors": 4}, timeout=60, repeatable=False, what="the coordinator")
    assert method.calls == 1  # never sent twice: Ray may have carried out the first
    assert "may or may not have been carried out" in str(raised.value)
    assert "goka-ray status" in str(raised.value)


def test_other_errors_pass_through_unchanged(no_ray_get: None) -> None:
    class Failing:
        def remote(self) -> Any:
            raise ValueError("not an availability problem")

    with pytest.raises(ValueError, match="not an availability problem"):
        remote.call(Failing(), timeout=5)


def test_status_and_wait_ready_ride_out_a_killed_coordinator(kafka, unique, tmp_path, ray_local):  # type: ignore[no-untyped-def]
    """The breaker's case: right after the coordinator's process is SIGKILLed, ``status``
    and ``wait_ready`` answer once Ray has started it again, never with Ray's
    ActorUnavailableError."""
    import sys

    import cloudpickle
    import kafka_helpers
    from kafka_helpers import produce_clicks
    from test_ownership_faults import coordinator_pid

    from goka_ray.examples import click_counter
    from goka_ray.kafka.topics import TopicManager
    from goka_ray.ray.processor import Processor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(kafka_helpers)
    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, 2)
    produce_clicks(kafka.bootstrap_servers, topic, 200, 20)
    config = {
        "storage_dir": str(tmp_path),
        "namespace": NAMESPACE,
        "groups": {graph.group: {"num_cpus": 0.1}},
    }
    processor = Processor(kafka.bootstrap_servers, graph, config)
    processor.start()
    try:
        processor.wait_ready(120)
        os.kill(coordinator_pid(graph.group), signal.SIGKILL)
        status = processor.status()  # Ray is restarting the coordinator
        assert status.group == graph.group
        ready = processor.wait_ready(120)
        assert [p.state for p in ready.partitions] == ["running", "running"]
    finally:
        processor.stop()
