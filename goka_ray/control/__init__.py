"""Ownership and placement rules of the Ray runtime, as plain Python (no Ray calls).

Which actor owns which partitions (assignment plans), leases and epochs that fence stale
owners, the names of the actors, the status records the coordinator reports, and the
bookkeeping behind the Ray metrics. The actor shells in :mod:`goka_ray.actors` apply them.
"""
