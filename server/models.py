"""The base of result and record models: their validators are built at first use, not at import.

Pydantic builds a model's core schema when its class is created unless ``defer_build`` is set; for the ~50
result models of the tools that is ~45 ms of every start (``bench/startup.py``), spent before the first
``tools/list`` although no result model is used until the first call.
"""

from pydantic import BaseModel, ConfigDict


class DeferredModel(BaseModel):
    """A ``BaseModel`` with ``defer_build=True`` (https://docs.pydantic.dev/latest/api/config/#pydantic.config.ConfigDict.defer_build)."""

    model_config = ConfigDict(defer_build=True)
