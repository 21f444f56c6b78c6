"""The driver's handles on the Ray runtime: Processor, View, and the cluster connection.

A notebook, a script, the CLI or the monitor uses these to start, attach to, scale and read
processor groups and views; they create and call the actor shells of :mod:`goka_ray.actors`.
"""
