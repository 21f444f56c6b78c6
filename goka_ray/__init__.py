"""goka-ray: stateful stream processing on Apache Kafka, scaled out on Ray.

Goka's model in Python: emitters produce to streams, processor groups consume them with
callbacks that read and write a partitioned, persisted table, and views serve the tables.
"""

from goka_ray import codecs
from goka_ray.codecs import Codec
from goka_ray.config import Config, GroupConfig, ViewConfig
from goka_ray.context import Context, DeferredCommit
from goka_ray.emitter import Delivery, Emitter
from goka_ray.errors import (
    BrokerError,
    CallbackFailed,
    CodecError,
    ConfigError,
    ContextError,
    FencedError,
    GokaRayError,
    GraphError,
    ProcessingError,
    StorageError,
    TopicError,
)
from goka_ray.graph import (
    GroupGraph,
    Input,
    Inputs,
    Join,
    Lookup,
    Loop,
    Output,
    Persist,
    Visitor,
    define_group,
    loop_stream,
    table,
)
from goka_ray.local import LocalKafka
from goka_ray.partition import VISIT_TOPIC, BatchResult, PartitionCore
from goka_ray.partitioner import GOKA, MURMUR2, GokaPartitioner, Partitioner, partitioner_named
from goka_ray.runtime import Processor
from goka_ray.status import Assignment, GroupStatus, PartitionStatus, ViewStatus
from goka_ray.storage import LevelDBStorage, MemoryStorage, Storage
from goka_ray.tables import ChangelogRecord, UpdateContext, UpdateStorage, default_update
from goka_ray.tester import EmittedMessage, Tester
from goka_ray.view import View, ViewObserver

__version__ = "0.1.0"

__all__ = [
    "GOKA",
    "MURMUR2",
    "VISIT_TOPIC",
    "Assignment",
    "BatchResult",
    "BrokerError",
    "CallbackFailed",
    "ChangelogRecord",
    "Codec",
    "CodecError",
    "Config",
    "ConfigError",
    "Context",
    "ContextError",
    "DeferredCommit",
    "Delivery",
    "EmittedMessage",
    "Emitter",
    "FencedError",
    "GokaPartitioner",
    "GokaRayError",
    "GraphError",
    "GroupConfig",
    "GroupGraph",
    "GroupStatus",
    "Input",
    "Inputs",
    "Join",
    "LevelDBStorage",
    "LocalKafka",
    "Lookup",
    "Loop",
    "MemoryStorage",
    "Output",
    "PartitionCore",
    "PartitionStatus",
    "Partitioner",
    "Persist",
    "ProcessingError",
    "Processor",
    "Storage",
    "StorageError",
    "Tester",
    "TopicError",
    "UpdateContext",
    "UpdateStorage",
    "View",
    "ViewConfig",
    "ViewObserver",
    "ViewStatus",
    "Visitor",
    "__version__",
    "codecs",
    "default_update",
    "define_group",
    "loop_stream",
    "partitioner_named",
    "table",
]
