"""goka-ray: stateful stream processing on Apache Kafka, scaled out on Ray.

Goka's model in Python: emitters produce to streams, processor groups consume them with
callbacks that read and write a partitioned, persisted table, and views serve the tables.
"""

from goka_ray import codecs
from goka_ray.codecs import Codec
from goka_ray.context import Context
from goka_ray.errors import (
    BrokerError,
    CallbackFailed,
    CodecError,
    ConfigError,
    ContextError,
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
from goka_ray.partition import BatchResult, PartitionCore
from goka_ray.storage import LevelDBStorage, MemoryStorage, Storage
from goka_ray.tester import EmittedMessage, Tester

__version__ = "0.1.0"

__all__ = [
    "BatchResult",
    "BrokerError",
    "CallbackFailed",
    "Codec",
    "CodecError",
    "ConfigError",
    "Context",
    "ContextError",
    "EmittedMessage",
    "GokaRayError",
    "GraphError",
    "GroupGraph",
    "Input",
    "Join",
    "LevelDBStorage",
    "Lookup",
    "Loop",
    "MemoryStorage",
    "Output",
    "PartitionCore",
    "Persist",
    "ProcessingError",
    "Storage",
    "StorageError",
    "Tester",
    "TopicError",
    "__version__",
    "codecs",
    "define_group",
    "loop_stream",
    "table",
]
