"""Hook specifications. A plugin module implements any of these with ``@hashbench.hookimpl``.

Each ``register_*`` hook receives a ``register`` callable; call it once per plugin class.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("hashbench")
hookimpl = pluggy.HookimplMarker("hashbench")


@hookspec
def register_attacks(register):
    """Register Attack subclasses."""


@hookspec
def register_defenses(register):
    """Register Defense subclasses (InputPurifier, InputDetector, ModelRepair, DataFilter)."""


@hookspec
def register_methods(register):
    """Register HashMethod subclasses (victim training objectives)."""


@hookspec
def register_backbones(register):
    """Register Backbone subclasses."""


@hookspec
def register_datasets(register):
    """Register Dataset subclasses."""


@hookspec
def register_metrics(register):
    """Register Metric subclasses."""


@hookspec
def register_exporters(register):
    """Register Exporter subclasses."""


@hookspec
def register_executors(register):
    """Register Executor subclasses."""


@hookspec
def register_commands(cli):
    """Add sub-commands: ``cli`` is the argparse sub-parsers object; set ``func`` on your parser."""
