"""The Kafka layer (confluent-kafka): clients, topics, the emitter, the partition runner.

It drives the core against a real broker: reads changelogs into table partitions, consumes
inputs, publishes a batch's changelog records and emits, and commits input offsets. No Ray here.
"""
