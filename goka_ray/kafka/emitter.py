"""Emitter: encodes values with a codec and produces them to one topic."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from goka_ray.core.codecs import Codec, as_codec
from goka_ray.core.keys import encode_key
from goka_ray.core.messages import headers_list
from goka_ray.core.partitioner import MURMUR2, Partitioner
from goka_ray.errors import BrokerError, GokaRayError
from goka_ray.kafka.clients import make_producer

__all__ = ["Delivery", "Emitter"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """Where Kafka stored an emitted message."""

    topic: str
    partition: int
    offset: int


class Emitter:
    """Produces ``key -> value`` messages to ``topic``, partitioned by the key.

    The partition is murmur2 of the key, as Kafka's Java client computes it, unless another
    ``partitioner`` is given: with ``partitioner=GOKA`` (Goka's FNV-1a hasher, which librdkafka
    does not know) the emitter looks up the topic's partition count once and chooses the
    partition itself.

        with Emitter("kafka:9092", "user-clicks", codecs.String()) as emitter:
            emitter.emit("alice", "click")          # a Future of a Delivery
            emitter.emit_sync("bob", "click")       # blocks until acknowledged

    Producer settings may be given as keywords with underscores (``linger_ms=20``) or as a
    ``config`` mapping with librdkafka's dotted names. ``headers`` are added to every message.
    """

    def __init__(
        self,
        brokers: str,
        topic: str,
        codec: Codec,
        *,
        partitioner: Partitioner = MURMUR2,
        headers: Mapping[str, str | bytes] | None = None,
        config: Mapping[str, Any] | None = None,
        **producer_config: Any,
    ) -> None:
        self.topic = topic
        self.codec = as_codec(codec, f"Emitter({topic!r})")
        self.partitioner = partitioner
        self._default_headers = dict(headers or {})
        settings = {k.replace("_", "."): v for k, v in producer_config.items()}
        settings.update(config or {})
        self._producer = make_producer(brokers, partitioner=partitioner, config=settings)
        self._brokers = brokers
        self._partitions: int | None = None
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True, name=f"emitter-{topic}")
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    def emit(
        self,
        key: str | bytes | None,
        value: Any,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> Future[Delivery]:
        """Produce asynchronously; the Future resolves once Kafka acknowledges the message.

        ``key`` is str (UTF-8; text goka-ray handed out for a key that is not UTF-8 encodes
        back to its bytes, see :mod:`goka_ray.core.keys`), bytes, or None for a message without
        a key (its partition is the producer's choice; groups skip such messages unless their
        Input says ``null_key=...``). TypeError for any other key.
        """
        if self._closed.is_set():
            raise GokaRayError(f"Emitter({self.topic!r}) is closed; create a new one")
        kb = None if key is None else encode_key(key, "emit()")
        data = None if value is None else self.codec.encode(value)
        merged = {**self._default_headers, **(headers or {})}
        future: Future[Delivery] = Future()

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                future.set_exception(
                    BrokerError(f"emit to {self.topic!r} at {self._brokers} failed: {err}")
                )
            else:
                future.set_result(Delivery(msg.topic(), msg.partition(), msg.offset()))

        kwargs: dict[str, Any] = {"key": kb, "value": data, "on_delivery": delivered}
        if merged:
            kwargs["headers"] = headers_list(merged)
        if self.partitioner.librdkafka_name is None and kb is not None:
            kwargs["partition"] = self.partitioner.partition(kb, self._partition_count())
        while True:
            try:
                self._producer.produce(self.topic, **kwargs)
                return future
            except BufferError:
                self._producer.poll(0.05)  # local queue full: wait for deliveries

    def _partition_count(self) -> int:
        if self._partitions is None:
            meta = self._producer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise BrokerError(f"topic {self.topic!r} not found at {self._brokers}")
            self._partitions = len(meta.partitions)
        return self._partitions

    def emit_sync(
        self,
        key: str | bytes | None,
        value: Any,
        headers: Mapping[str, str | bytes] | None = None,
        timeout: float = 30.0,
    ) -> Delivery:
        """Produce and wait for the acknowledgement."""
        return self.emit(key, value, headers).result(timeout)

    def flush(self, timeout: float | None = None) -> int:
        """Wait for every pending message; returns how many are still not acknowledged."""
        remaining: int = self._producer.flush(-1 if timeout is None else timeout)
        return remaining

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop; emitting afterwards raises."""
        if self._closed.is_set():
            return
        remaining = self.flush(timeout)
        self._closed.set()
        self._poller.join(5)
        if remaining:
            logger.warning(
                "Emitter(%s) closed with %d unacknowledged messages", self.topic, remaining
            )

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
