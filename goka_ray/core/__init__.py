"""The core: a processor group's logic as plain Python, with no Ray and no Kafka client.

Group graphs, the Context a callback acts through, codecs, the partitioner, table storage
(LevelDB, memory), table partitions fed from a changelog, the PartitionCore that processes a
partition's messages, and the in-memory Tester that drives the same core. Everything above
(the Kafka runner, the Ray actors) wraps these modules; nothing here imports them.
"""
