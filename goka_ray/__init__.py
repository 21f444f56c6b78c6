"""goka-ray: stateful stream processing on Apache Kafka, scaled out on Ray.

Goka's model in Python: emitters produce to streams, processor groups consume them with
callbacks that read and write a partitioned, persisted table, and views serve the tables.
"""

from goka_ray.control.status import Assignment, GroupStatus, PartitionStatus, ViewStatus
from goka_ray.core import codecs
from goka_ray.core.codecs import Codec
from goka_ray.core.config import Config, GroupConfig, ViewConfig
from goka_ray.core.context import Context, DeferredCommit
from goka_ray.core.fingerprint import GraphFingerprint, fingerprint
from goka_ray.core.graph import (
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
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.core.partition import VISIT_TOPIC, BatchResult, PartitionCore
from goka_ray.core.partitioner import GOKA, MURMUR2, GokaPartitioner, Partitioner, partitioner_named
from goka_ray.core.storage import LevelDBStorage, MemoryStorage, Storage
from goka_ray.core.tables import ChangelogRecord, UpdateContext, UpdateStorage, default_update
from goka_ray.core.tester import EmittedMessage, Tester
from goka_ray.core.views import TableView
from goka_ray.errors import (
    BrokerError,
    CallbackFailed,
    CodecError,
    CodeChangedError,
    ConfigError,
    ContextError,
    FencedError,
    GokaRayError,
    GraphError,
    InsufficientResourcesError,
    LocalCopyDamaged,
    ProcessingError,
    RecordRejected,
    StorageError,
    StorageLocked,
    TopicError,
    UnavailableError,
    UpgradeError,
)
from goka_ray.kafka.emitter import Delivery, Emitter
from goka_ray.kafka.local_view import LocalView
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.processor import Processor
from goka_ray.ray.view import View, ViewObserver
from goka_ray.tools.local import LocalKafka

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
    "CodeChangedError",
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
    "GraphFingerprint",
    "GroupConfig",
    "GroupGraph",
    "GroupStatus",
    "Input",
    "Inputs",
    "InsufficientResourcesError",
    "Join",
    "LevelDBStorage",
    "LocalCopyDamaged",
    "LocalKafka",
    "LocalView",
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
    "RecordRejected",
    "Storage",
    "StorageError",
    "StorageLocked",
    "TableView",
    "Tester",
    "TopicError",
    "TopicManager",
    "UnavailableError",
    "UpdateContext",
    "UpdateStorage",
    "UpgradeError",
    "View",
    "ViewConfig",
    "ViewObserver",
    "ViewStatus",
    "Visitor",
    "__version__",
    "codecs",
    "decode_key",
    "default_update",
    "define_group",
    "encode_key",
    "fingerprint",
    "loop_stream",
    "partitioner_named",
    "table",
]
