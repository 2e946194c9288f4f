"""The in-process executor (the default)."""

from hashbench import hookimpl
from hashbench.executors.local import LocalExecutor


@hookimpl
def register_executors(register):
    register(LocalExecutor)
