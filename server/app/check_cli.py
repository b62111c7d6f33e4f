"""``ai-orchestration-mcp check [--probe]``: the configuration, each provider's readiness, and (with ``--probe``)
one minimal request per provider.

Without ``--probe`` nothing leaves the machine: the configuration is validated and each provider is listed with
where its key comes from; a key that looks like a placeholder (``sk-...``, ``<your key>``) or a named key
variable that is not set is a warning. ``--probe`` sends each ready provider one completion of one token and
reports what came back: unreachable (naming the host), the key refused, the model (or endpoint) not found, or
an answer. Keys are never printed.

Exit status: 0 all ready (and, with ``--probe``, all answered), 1 otherwise; 2 is an invalid configuration (the
entry point's).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from server.config import Config, DatabaseLocation, ProviderConfig

if TYPE_CHECKING:
    from server.pool.pool import ProviderPool
    from server.pool.providers import CompletionRequest, Provider

PROBE_TIMEOUT_S = 15.0
_PLACEHOLDER = re.compile(r"\.\.\.|…|<|>|xxx|your|placeholder|change.?me|replace.?me|example|insert|dummy|todo",
                          re.IGNORECASE)
_MIN_VENDOR_KEY_CHARS = 20  # real OpenAI and Anthropic keys are far longer


def key_warning(provider: ProviderConfig) -> str | None:
    """Why the provider's key looks wrong (a placeholder, too short, a named variable not set), or ``None``."""
    if provider.api_key is None:
        if provider.api_key_env and provider.base_url:
            return f"{provider.api_key_env} is not set: calls to {provider.base_url} go without a key"
        return None
    key = provider.api_key.get_secret_value().strip()
    where = provider.key_env or "the config file"
    if _PLACEHOLDER.search(key) or not key:
        return f"the key from {where} looks like a placeholder: set the real key"
    if provider.base_url is None and len(key) < _MIN_VENDOR_KEY_CHARS:
        return f"the key from {where} is too short for a {provider.kind} key: set the real key"
    return None


def run_check(config: Config, state: os.PathLike | str | DatabaseLocation, *, simple: bool = False,
              probe: bool = False, replica: str | None = None, out: TextIO | None = None) -> int:
    """Print the check (see the module docstring). Returns the exit status."""
    out = out or sys.stdout
    print(f"configuration: {config.source}", file=out)  # cli-output
    if simple:
        print("mode: simple (wire-protocol providers; call records in memory)", file=out)  # cli-output
    # A PostgreSQL URL prints without its password (PostgresDatabase.__str__).
    print(f"{'state file' if simple else 'database'}: {state}", file=out)  # cli-output
    if replica is not None:
        print(f"replica id: {replica}", file=out)  # cli-output
    print(f"routing strategy: {config.routing.strategy}", file=out)  # cli-output
    if not config.providers:
        print("providers: none configured (tools that need a model will say what to set)", file=out)  # cli-output
        return 0
    failed = 0
    for p in config.providers:
        problem = p.readiness()
        failed += problem is not None
        if problem:
            state_text = f"NOT READY: {problem}"
        elif p.api_key is not None:
            state_text = f"ready (key from {p.key_env or 'config file'})"
        else:
            state_text = "ready (no key: custom endpoint)"
        endpoint = p.base_url or "vendor default endpoint"
        print(f"  {p.name:<20} {p.kind:<10} {p.model:<28} priority={p.priority:<4} {endpoint}  {state_text}",  # cli-output
              file=out)
        warning = key_warning(p)
        if warning:
            print(f"  {'':<20} WARNING: {warning}", file=out)  # cli-output
    if probe:
        import anyio

        print("probe (one request of one token per provider):", file=out)  # cli-output
        for name, verdict, ok in anyio.run(probe_providers, config, simple):
            failed += not ok
            print(f"  {name:<20} {verdict}", file=out)  # cli-output
    return 1 if failed else 0


async def probe_providers(config: Config, simple: bool = False,
                          factory: Callable[[ProviderConfig], Provider] | None = None) -> list[tuple[str, str, bool]]:
    """One minimal completion per ready provider: ``(name, what happened, answered)`` each, in config order.

    Each probe goes the way a call goes: through a :class:`~server.pool.ProviderPool` over an in-memory store, its
    policy layer (``[guardrails]``, ``[limits]``), recording, and the member (admission, timeout), with the
    configured outbound address policy on the provider's HTTP client; but each provider on its own (no fallback,
    no retries), so every verdict is that provider's.
    """
    import functools

    from server.pool.pool import ProviderPool
    from server.pool.policy import Policy
    from server.pool.providers import CompletionRequest, Message, build_provider, build_wire_provider
    from server.security.addresses import AddressPolicy
    from server.store.memory import MemoryStore

    if factory is None:
        factory = functools.partial(build_wire_provider if simple else build_provider,
                                    policy=AddressPolicy.from_settings(config.network))
    request = CompletionRequest(messages=(Message("user", "ping"),), max_tokens=1, timeout_s=PROBE_TIMEOUT_S)
    ready = [entry for entry in config.providers if entry.readiness() is None]
    store = MemoryStore()
    policy = Policy.from_config(config, store.guardrails, phones="pattern" if simple else "library")
    pool = ProviderPool([(entry, factory(entry)) for entry in ready], store.calls, config=config, policy=policy)
    results = []
    try:
        for entry in config.providers:
            if entry.readiness() is not None:
                results.append((entry.name, "skipped: not ready", False))
                continue
            results.append((entry.name, *await _probe_one(pool, entry.name, request)))
    finally:
        await pool.aclose()
        await store.aclose()
    return results


async def _probe_one(pool: ProviderPool, name: str, request: CompletionRequest) -> tuple[str, bool]:
    import anyio

    from server.errors import OrchestrationError, PolicyError, ProviderError

    try:
        call = await pool.call(tool="check")
        provider = pool.provider(name, call)
        with anyio.fail_after(PROBE_TIMEOUT_S + 1):
            completion = await provider.complete(request)
    except TimeoutError:
        return f"unreachable: no answer within {PROBE_TIMEOUT_S:.0f} s", False
    except ProviderError as exc:
        return _verdict(exc), False
    except PolicyError as exc:
        return f"not sent: the server's policy refuses it: {exc}", False
    except OrchestrationError as exc:  # the pool would not hand it out (budget spent, not admitted)
        return f"not sent: {exc}", False
    return f"ok: reachable, key accepted, model {completion.model} answered", True


def _verdict(error: object) -> str:
    error_class = getattr(error, "error_class", "")
    status = getattr(error, "status_code", None)
    if error_class in ("connection", "timeout"):
        return f"unreachable: {error}"
    if error_class == "authentication":
        return f"reachable, but the key was refused: {error}"
    if status == 404:
        return f"reachable, but the model or endpoint was not found: {error}"
    if error_class == "rate_limited":
        return f"reachable and the key works, but rate limited now: {error}"
    return f"reachable, but the request failed: {error}"
