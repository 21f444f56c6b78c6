"""Group graphs: a processor group declared as data, validated once when defined.

graph = define_group(
    "clicks",
    Input("user-clicks", codecs.String(), count_click),
    Persist(codecs.Int()),
)
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from goka_ray.core.codecs import Codec, as_codec
from goka_ray.errors import CodecError, GraphError

if TYPE_CHECKING:
    from goka_ray.core.context import Context
    from goka_ray.core.tables import UpdateCallback

__all__ = [
    "Callback",
    "ErrorPolicy",
    "GroupGraph",
    "Input",
    "Inputs",
    "Join",
    "Lookup",
    "Loop",
    "Output",
    "Persist",
    "Visitor",
    "check_update_callback",
    "dead_letter_topic",
    "define_group",
    "loop_stream",
    "table",
]

Callback = Callable[["Context", Any], None]
DecodeErrorPolicy = Literal["fail", "skip", "dead_letter"]
#: what to do when a callback raises: fail the partition, skip the message, or dead-letter it
ErrorPolicy = Literal["fail", "skip", "dead_letter"]
NilPolicy = Literal["ignore", "process", "decode"]
#: what to do with a message that has no key (Kafka's null key)
NullKeyPolicy = Literal["skip", "dead_letter", "fail", "process"]

_DECODE_POLICIES = ("fail", "skip", "dead_letter")
_ERROR_POLICIES = ("fail", "skip", "dead_letter")
_NIL_POLICIES = ("ignore", "process", "decode")
_NULL_KEY_POLICIES = ("skip", "dead_letter", "fail", "process")
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


def table(group: str) -> str:
    """Name of a group's table (changelog) topic: ``<group>-table``."""
    return f"{group}-table"


def loop_stream(group: str) -> str:
    """Name of a group's loopback topic: ``<group>-loop``."""
    return f"{group}-loop"


def dead_letter_topic(group: str) -> str:
    """Name of a group's dead-letter topic: ``<group>-dlq``."""
    return f"{group}-dlq"


def _check_topic(topic: object, edge: str) -> str:
    if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise GraphError(
            f"{edge}: {topic!r} is not a valid Kafka topic name; use 1-249 characters from "
            f"[a-zA-Z0-9._-]"
        )
    return topic


def _check_callback(callback: object, edge: str) -> Callback:
    if not callable(callback):
        raise GraphError(
            f"{edge}: callback {callback!r} is not callable; pass a function (ctx, msg) -> None"
        )
    if inspect.iscoroutinefunction(callback) or inspect.isasyncgenfunction(callback):
        raise GraphError(
            f"{edge}: callback {callback!r} is async; callbacks run synchronously, so pass a "
            f"plain function (ctx, msg) -> None"
        )
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return callback
    try:
        signature.bind(None, None)
    except TypeError as exc:
        raise GraphError(
            f"{edge}: callback {callback!r} cannot be called as callback(ctx, msg) ({exc}); "
            f"give it two positional parameters"
        ) from None
    return callback


def check_update_callback(update: object, edge: str) -> None:
    """Check an ``update(ctx, storage, key, value)`` callback (of Persist, Join or a View).

    None passes. Raises GraphError naming ``edge`` if it is not callable, is async, or cannot
    take four positional arguments.
    """
    if update is None:
        return
    hint = "pass a function (ctx, storage, key, value) -> None"
    if not callable(update):
        raise GraphError(f"{edge}: update {update!r} is not callable; {hint}")
    if inspect.iscoroutinefunction(update) or inspect.isasyncgenfunction(update):
        raise GraphError(
            f"{edge}: update {update!r} is async; update callbacks run synchronously, {hint}"
        )
    try:
        signature = inspect.signature(update)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, None, None, None)
    except TypeError as exc:
        raise GraphError(
            f"{edge}: update {update!r} cannot be called as update(ctx, storage, key, value) "
            f"({exc}); give it four positional parameters"
        ) from None


def _check_codec(codec: object, edge: str) -> Codec:
    try:
        return as_codec(codec, edge)
    except CodecError as exc:
        raise GraphError(str(exc)) from exc


@dataclass(frozen=True)
class Input:
    """Consume ``topic``, decode values with ``codec`` and call ``callback(ctx, msg)``.

    ``on_decode_error``: what to do with a message the codec cannot decode: ``"fail"`` the
    partition (default), ``"skip"`` it (logged and counted), or forward it raw to the group's
    ``<group>-dlq`` topic (``"dead_letter"``).
    ``nil``: messages with a null value (tombstones) are dropped (``"ignore"``, default), passed
    to the callback as ``None`` (``"process"``), or decoded from empty bytes (``"decode"``).
    ``on_error``: what to do when the callback raises: ``"fail"`` the partition (default),
    ``"skip"`` the message (its effects are discarded; logged and counted), or forward it raw
    to ``<group>-dlq`` (``"dead_letter"``). ``ctx.fail()`` and misuse of the context
    (:class:`~goka_ray.errors.ContextError`) always fail the partition.
    ``null_key``: what to do with a message that has no key. Such a message belongs to no key,
    so no table value can be read or stored for it (a value stored under it would sit in
    whatever partition the producer picked, where no view, join or lookup looks). By default
    it is ``"skip"``ped (logged and counted, as Kafka Streams drops keyless records of an
    aggregation); ``"dead_letter"`` forwards it to ``<group>-dlq``, ``"fail"`` stops the
    partition, and ``"process"`` passes it to the callback with ``ctx.key`` None, where the
    table (``value``/``set_value``/``delete``/``join``) raises ContextError but emits work.
    Goka differs: it processes such a message under the key ``""``.
    """

    topic: str
    codec: Codec
    callback: Callback
    on_decode_error: DecodeErrorPolicy = "fail"
    nil: NilPolicy = "ignore"
    on_error: ErrorPolicy = "fail"
    null_key: NullKeyPolicy = "skip"

    def __post_init__(self) -> None:
        edge = f"Input({self.topic!r})"
        _check_topic(self.topic, "Input")
        object.__setattr__(self, "codec", _check_codec(self.codec, edge))
        _check_callback(self.callback, edge)
        _check_policies(edge, self.on_decode_error, self.nil, self.on_error, self.null_key)


def _check_policies(
    edge: str, on_decode_error: object, nil: object, on_error: object, null_key: object
) -> None:
    if on_decode_error not in _DECODE_POLICIES:
        raise GraphError(
            f"{edge}: on_decode_error={on_decode_error!r}; choose one of {_DECODE_POLICIES}"
        )
    if nil not in _NIL_POLICIES:
        raise GraphError(f"{edge}: nil={nil!r}; choose one of {_NIL_POLICIES}")
    if on_error not in _ERROR_POLICIES:
        raise GraphError(f"{edge}: on_error={on_error!r}; choose one of {_ERROR_POLICIES}")
    if null_key not in _NULL_KEY_POLICIES:
        raise GraphError(f"{edge}: null_key={null_key!r}; choose one of {_NULL_KEY_POLICIES}")


@dataclass(frozen=True)
class Inputs:
    """Several streams with one codec and one callback (Goka's ``Inputs``).

    ``define_group`` expands it into one :class:`Input` per topic, with the same options.
    """

    topics: tuple[str, ...]
    codec: Codec
    callback: Callback
    on_decode_error: DecodeErrorPolicy = "fail"
    nil: NilPolicy = "ignore"
    on_error: ErrorPolicy = "fail"
    null_key: NullKeyPolicy = "skip"

    def __init__(
        self,
        topics: Iterable[str],
        codec: Codec,
        callback: Callback,
        on_decode_error: DecodeErrorPolicy = "fail",
        nil: NilPolicy = "ignore",
        on_error: ErrorPolicy = "fail",
        null_key: NullKeyPolicy = "skip",
    ) -> None:
        if isinstance(topics, str | bytes) or not isinstance(topics, Iterable):
            raise GraphError(
                f"Inputs({topics!r}, ...): pass a list of topic names; for one topic use "
                f"Input(topic, codec, callback)"
            )
        names = tuple(topics)
        if not names:
            raise GraphError("Inputs([], ...): name at least one topic")
        for t in names:
            _check_topic(t, "Inputs")
        if len(set(names)) != len(names):
            dup = sorted({t for t in names if names.count(t) > 1})
            raise GraphError(f"Inputs({list(names)!r}): topics {dup} are listed twice")
        edge = f"Inputs({list(names)!r})"
        object.__setattr__(self, "topics", names)
        object.__setattr__(self, "codec", _check_codec(codec, edge))
        object.__setattr__(self, "callback", _check_callback(callback, edge))
        _check_policies(edge, on_decode_error, nil, on_error, null_key)
        object.__setattr__(self, "on_decode_error", on_decode_error)
        object.__setattr__(self, "nil", nil)
        object.__setattr__(self, "on_error", on_error)
        object.__setattr__(self, "null_key", null_key)

    def expand(self) -> tuple[Input, ...]:
        """One Input edge per topic."""
        return tuple(
            Input(
                t,
                self.codec,
                self.callback,
                self.on_decode_error,
                self.nil,
                self.on_error,
                self.null_key,
            )
            for t in self.topics
        )


@dataclass(frozen=True)
class Persist:
    """The group's own table, ``<group>-table``, with values encoded by ``codec``.

    ``update(ctx, storage, key, value)``, if given, is called instead of the default store
    (delete for a None value) for every changelog record applied while the table is recovered
    or caught up, so it can filter or transform what is stored: ``ctx`` is an
    :class:`~goka_ray.core.tables.UpdateContext` (topic, partition, offset, headers), ``storage`` an
    :class:`~goka_ray.core.tables.UpdateStorage` (get/has/set/delete of raw bytes), ``value`` the
    record's raw bytes. The callbacks' own ``ctx.set_value``/``delete`` are stored as they are.
    """

    codec: Codec
    update: UpdateCallback | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "codec", _check_codec(self.codec, "Persist"))
        check_update_callback(self.update, "Persist")


@dataclass(frozen=True)
class Join:
    """A co-partitioned table: ``ctx.join(table)`` reads the value of the message's key.

    ``update`` works as for :class:`Persist`, on the changelog records of ``table``.
    """

    table: str
    codec: Codec
    update: UpdateCallback | None = None

    def __post_init__(self) -> None:
        _check_topic(self.table, "Join")
        edge = f"Join({self.table!r})"
        object.__setattr__(self, "codec", _check_codec(self.codec, edge))
        check_update_callback(self.update, edge)


@dataclass(frozen=True)
class Lookup:
    """Any table, read by key from all its partitions: ``ctx.lookup(table, key)``."""

    table: str
    codec: Codec

    def __post_init__(self) -> None:
        _check_topic(self.table, "Lookup")
        object.__setattr__(self, "codec", _check_codec(self.codec, f"Lookup({self.table!r})"))


@dataclass(frozen=True)
class Loop:
    """The group's loopback stream ``<group>-loop``: ``ctx.loopback(key, value)``.

    The callback gets every looped-back value, ``None`` included. ``on_decode_error`` and
    ``on_error`` work as for :class:`Input`.
    """

    codec: Codec
    callback: Callback
    on_decode_error: DecodeErrorPolicy = "fail"
    on_error: ErrorPolicy = "fail"

    def __post_init__(self) -> None:
        object.__setattr__(self, "codec", _check_codec(self.codec, "Loop"))
        _check_callback(self.callback, "Loop")
        _check_policies("Loop", self.on_decode_error, "process", self.on_error, "skip")


@dataclass(frozen=True)
class Output:
    """A stream the callbacks may emit to: ``ctx.emit(topic, key, value)``."""

    topic: str
    codec: Codec

    def __post_init__(self) -> None:
        _check_topic(self.topic, "Output")
        object.__setattr__(self, "codec", _check_codec(self.codec, f"Output({self.topic!r})"))


@dataclass(frozen=True)
class Visitor:
    """A named visitor of the group table (Goka's ``Visitor``).

    Visiting runs ``callback(ctx, meta)`` once for every key of the table (each partition
    visits its own keys), with a full Context: ``ctx.key`` is the visited key, ``ctx.value()``
    its value, and ``set_value``/``delete``/``emit``/``loopback`` work as for a message;
    ``ctx.topic`` is ``"__visit__"`` and ``meta`` is what the visit was started with. The
    group needs a table (``Persist``).
    """

    name: str
    callback: Callback

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise GraphError(f"Visitor({self.name!r}): give the visitor a non-empty str name")
        _check_callback(self.callback, f"Visitor({self.name!r})")


Edge = Input | Persist | Join | Lookup | Loop | Output | Visitor


@dataclass(frozen=True)
class StreamEdge:
    """An input stream of the group as the processing core sees it (Input or Loop)."""

    topic: str
    codec: Codec
    callback: Callback
    on_decode_error: DecodeErrorPolicy
    nil: NilPolicy
    on_error: ErrorPolicy = "fail"
    null_key: NullKeyPolicy = "skip"


@dataclass(frozen=True)
class GroupGraph:
    """A validated processor group. Build it with :func:`define_group`."""

    group: str
    edges: tuple[Edge, ...]
    inputs: tuple[Input, ...] = field(init=False)
    persist: Persist | None = field(init=False)
    joins: tuple[Join, ...] = field(init=False)
    lookups: tuple[Lookup, ...] = field(init=False)
    loop: Loop | None = field(init=False)
    outputs: tuple[Output, ...] = field(init=False)
    visitors: tuple[Visitor, ...] = field(init=False)

    def __post_init__(self) -> None:
        def of(kind: type) -> tuple[Any, ...]:
            return tuple(e for e in self.edges if isinstance(e, kind))

        def at_most_one(kind: type) -> Any:
            found = of(kind)
            if len(found) > 1:
                raise GraphError(
                    f"group {self.group!r}: {len(found)} {kind.__name__} edges; a group has at "
                    f"most one {kind.__name__}"
                )
            return found[0] if found else None

        object.__setattr__(self, "inputs", of(Input))
        object.__setattr__(self, "persist", at_most_one(Persist))
        object.__setattr__(self, "joins", of(Join))
        object.__setattr__(self, "lookups", of(Lookup))
        object.__setattr__(self, "loop", at_most_one(Loop))
        object.__setattr__(self, "outputs", of(Output))
        object.__setattr__(self, "visitors", of(Visitor))
        self._validate()

    def _validate(self) -> None:
        g = self.group
        if not self.inputs:
            raise GraphError(f"group {g!r} has no Input edge; add Input(topic, codec, callback)")
        own = {self.table_topic: "the group's table", self.loop_topic: "the group's loop topic"}
        if self.visitors and self.persist is None:
            raise GraphError(
                f"group {g!r}: Visitor({self.visitors[0].name!r}) visits the group table, but "
                f"the group has none; add Persist(codec)"
            )
        names = [v.name for v in self.visitors]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise GraphError(f"group {g!r}: visitor names {dup} are used twice; name them apart")
        seen: dict[str, str] = {}
        for edge in self.edges:
            if isinstance(edge, Persist | Loop | Visitor):
                continue
            topic = edge.topic if isinstance(edge, Input | Output) else edge.table
            name = f"{type(edge).__name__}({topic!r})"
            if topic in own:
                hint = (
                    "use ctx.value()/set_value() for the own table"
                    if topic == self.table_topic
                    else "use a Loop edge and ctx.loopback()"
                )
                raise GraphError(f"group {g!r}: {name} names {own[topic]}; {hint}")
            if topic in seen:
                raise GraphError(
                    f"group {g!r}: topic {topic!r} is used by both {seen[topic]} and {name}; "
                    f"each topic may appear in one edge only"
                )
            seen[topic] = name

    # -- derived names ------------------------------------------------------------------------

    @property
    def table_topic(self) -> str:
        """``<group>-table``: the changelog topic of the group table."""
        return table(self.group)

    @property
    def loop_topic(self) -> str:
        """``<group>-loop``: the loopback topic."""
        return loop_stream(self.group)

    @property
    def dead_letter_topic(self) -> str:
        """``<group>-dlq``: where messages go under a ``dead_letter`` policy."""
        return dead_letter_topic(self.group)

    # -- what the runtime needs ---------------------------------------------------------------

    def streams(self) -> Iterator[StreamEdge]:
        """Every stream the group consumes: its Inputs, then its Loop topic."""
        for e in self.inputs:
            yield StreamEdge(
                e.topic, e.codec, e.callback, e.on_decode_error, e.nil, e.on_error, e.null_key
            )
        if self.loop is not None:
            yield StreamEdge(
                self.loop_topic,
                self.loop.codec,
                self.loop.callback,
                self.loop.on_decode_error,
                "process",  # only the group writes its loop: ctx.loopback(k, None) arrives as None
                self.loop.on_error,
                "skip",  # the group writes its loop with keys only (ctx.loopback needs one)
            )

    def stream_topics(self) -> list[str]:
        """Topics the group consumes (inputs and loop)."""
        return [s.topic for s in self.streams()]

    def copartitioned_topics(self) -> list[str]:
        """Topics that must all have the same partition count: inputs, loop, table, joins."""
        topics = self.stream_topics()
        if self.persist is not None:
            topics.append(self.table_topic)
        topics.extend(j.table for j in self.joins)
        return topics

    def visitor(self, name: str) -> Visitor | None:
        """The Visitor called ``name``, or None."""
        for v in self.visitors:
            if v.name == name:
                return v
        return None

    def output_codec(self, topic: str) -> Codec | None:
        """The codec of Output ``topic``, or None if the graph declares no such output."""
        for o in self.outputs:
            if o.topic == topic:
                return o.codec
        return None

    def uses_dead_letter(self) -> bool:
        """Whether any stream may forward messages to ``<group>-dlq`` (undecodable ones, ones
        whose callback raised, or ones without a key)."""
        return any(
            "dead_letter" in (s.on_decode_error, s.on_error, s.null_key) for s in self.streams()
        )

    def __repr__(self) -> str:
        return f"GroupGraph({self.group!r}, {', '.join(_edge_repr(e) for e in self.edges)})"


def _edge_repr(e: Edge) -> str:
    if isinstance(e, Input | Output):
        return f"{type(e).__name__}({e.topic!r})"
    if isinstance(e, Join | Lookup):
        return f"{type(e).__name__}({e.table!r})"
    if isinstance(e, Visitor):
        return f"Visitor({e.name!r})"
    return type(e).__name__


def define_group(name: str, *edges: Edge | Inputs | Sequence[Edge | Inputs]) -> GroupGraph:
    """Declare a processor group: its name (= Kafka consumer group id) and its edges.

    :class:`Inputs` edges are expanded into one :class:`Input` per topic.

    Raises :class:`~goka_ray.errors.GraphError` with what to fix when the graph is malformed.
    """
    if not isinstance(name, str) or not name or not _TOPIC_NAME.fullmatch(f"{name}-table"):
        raise GraphError(
            f"group name {name!r} is not usable: it names the topics '<group>-table' and "
            f"'<group>-loop', so use 1-243 characters from [a-zA-Z0-9._-]"
        )
    given: list[object] = []
    for e in edges:
        if isinstance(e, list | tuple):
            given.extend(e)
        else:
            given.append(e)
    flat: list[Edge] = []
    for edge in given:
        if isinstance(edge, Inputs):
            flat.extend(edge.expand())
        elif isinstance(edge, Input | Persist | Join | Lookup | Loop | Output | Visitor):
            flat.append(edge)
        else:
            raise GraphError(
                f"group {name!r}: {edge!r} is not an edge; use Input, Persist, Join, Lookup, "
                f"Loop, Output, Inputs or Visitor"
            )
    return GroupGraph(name, tuple(flat))
