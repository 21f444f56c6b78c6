"""goka-ray: stateful stream processing on Apache Kafka, scaled out on Ray.

Goka's model in Python: emitters produce to streams, processor groups consume them with
callbacks that read and write a partitioned, persisted table, and views serve the tables.
"""

from goka_ray import codecs
from goka_ray.codecs import Codec
from goka_ray.config import Config, GroupConfig, ViewConfig
from goka_ray.context import Context
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
    Join,
    Lookup,
    Loop,
    Output,
    Persist,
    define_group,
    loop_stream,
    table,
)
from goka_ray.local import LocalKafka
from goka_ray.partition import BatchResult, PartitionCore
from goka_ray.runtime import Processor
from goka_ray.status import GroupStatus, PartitionStatus, ViewStatus
from goka_ray.storage import LevelDBStorage, MemoryStorage, Storage
from goka_ray.tester import EmittedMessage, Tester
from goka_ray.view import View

__version__ = "0.1.0"

__all__ = [
    "BatchResult",
    "BrokerError",
    "CallbackFailed",
    "Codec",
    "CodecError",
    "Config",
    "ConfigError",
    "Context",
    "ContextError",
    "Delivery",
    "EmittedMessage",
    "Emitter",
    "FencedError",
    "GokaRayError",
    "GraphError",
    "GroupConfig",
    "GroupGraph",
    "GroupStatus",
    "Input",
    "Join",
    "LevelDBStorage",
    "LocalKafka",
    "Lookup",
    "Loop",
    "MemoryStorage",
    "Output",
    "PartitionCore",
    "PartitionStatus",
    "Persist",
    "ProcessingError",
    "Processor",
    "Storage",
    "StorageError",
    "Tester",
    "TopicError",
    "View",
    "ViewConfig",
    "ViewStatus",
    "__version__",
    "codecs",
    "define_group",
    "loop_stream",
    "table",
]
