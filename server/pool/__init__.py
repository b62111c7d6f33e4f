"""The provider pool: the Provider protocol and its SDK and wire-protocol implementations (:mod:`.providers`),
routing (:mod:`.routing`), per-provider health, breakers and budgets (:mod:`.health`), the pool with fallback
(:mod:`.pool`), the ``orchestrate`` service (:mod:`.orchestration`) and the pool's status report (:mod:`.status`).
"""
