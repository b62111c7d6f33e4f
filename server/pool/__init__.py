"""The provider pool, composed of :class:`~server.pool.providers.Provider` s as pydantic-ai composes models.

- :mod:`.providers`: the Provider protocol, the request/completion types, the SDK and wire-protocol providers;
- :mod:`.member`: a configured provider with its health and concurrency limit (:mod:`.health`: breakers,
  cooldowns, rate and token limits, budgets);
- :mod:`.routing`: the strategies that order a call's candidates, and A/B buckets;
- :mod:`.fallback`: the fallback provider and its rule by error class;
- :mod:`.recording`: the wrapper that records every attempt;
- :mod:`.policy`: the screening wrapper on every path (guardrails, PII redaction via :mod:`.pii`, ceilings, reply
  screening via :mod:`.replies`);
- :mod:`.pool`: the pool, which hands out the composed providers for a call (:mod:`.call`);
- :mod:`.orchestration`: the ``orchestrate`` service; :mod:`.status`: the pool's health report.

Importing this package imports none of them.
"""
