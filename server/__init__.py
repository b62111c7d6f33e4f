"""The server: CLI entry, configuration, app assembly, transports and the orchestration core."""

__version__ = "0.1.0"
"""The distribution's version (``pyproject.toml`` reads it from here, so start-up needs no package metadata)."""
