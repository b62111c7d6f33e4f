"""The server: CLI entry, configuration, app assembly, transports and the orchestration core."""

__version__ = "0.1.0"
"""The distribution's version (``pyproject.toml`` reads it from here, so start-up needs no package metadata)."""


def lazy_exports(homes: dict[str, str], namespace: dict):
    """A module ``__getattr__`` (PEP 562) for the package whose ``globals()`` is ``namespace``: each name in
    ``homes`` (name → submodule) is imported from that submodule at first use and kept in ``namespace``; any
    other name raises ``AttributeError``. It lets a package re-export its API without importing its modules at
    start-up."""
    import importlib

    package = namespace["__name__"]

    def __getattr__(name: str):
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        namespace[name] = value
        return value

    return __getattr__
