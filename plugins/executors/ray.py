"""The Ray executor (`executor = "ray"`); Ray itself is imported only when a run uses it."""

from hashbench import hookimpl
from hashbench.executors.ray import RayExecutor


@hookimpl
def register_executors(register):
    register(RayExecutor)
