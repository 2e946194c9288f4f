"""hashbench's built-in plugins. Each module that implements a ``register_*`` hook is one plugin,
registered through its own entry point ``<folder>.<module>`` of group ``hashbench`` (pyproject.toml),
exactly as a third-party plugin is; modules named ``_*`` (and plugins/datasets/files.py) are helpers.
"""
