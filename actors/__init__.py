"""The Ray actor shells, installed as ``goka_ray.actors``: coordinator, partition, view.

They hold no processing or ownership logic of their own: each wraps plain-Python parts from
the layers below (ownership rules, the partition runner, table partitions) in a Ray actor.
The repository keeps them in the top-level ``actors/`` folder; ``goka_ray/actors`` links to
it, so the installed package has no generic top-level ``actors`` module.
"""
