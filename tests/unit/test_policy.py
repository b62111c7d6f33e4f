"""The policy layer on fake providers: PII redaction (both phone modes, a corpus of true and false positives),
reply screening (lone surrogates, echoed secrets whole, partly and base64-encoded), cost ceilings from the
providers a call can use, allowed models, and one decision per consensus fan-out."""

from __future__ import annotations

import base64
import json

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.config import Config
from server.errors import CeilingExceeded, GuardrailBlocked
from server.pool.orchestration import OrchestrateRequest, orchestrate
from server.pool.pii import PiiRedactor, luhn_ok
from server.pool.pool import ProviderPool
from server.pool.providers import CompletionRequest, Message
from server.pool.replies import SecretMasker, clean_text
from server.store.memory import MemoryStore
from server.store.sqlite import SQLiteStore
from tests.fakes import Reply, fake_config, fake_entry, fleet_for

pytestmark = pytest.mark.anyio
KEY = "sk-abcDEF123ghiJKL456mno"  # 24 characters
REQUEST = CompletionRequest(messages=(Message("user", "hello"),))

# -- PII -----------------------------------------------------------------------------------------------------------

BOTH_MODES = [  # (text, what must be redacted to)
    ("mail ada@example.com now", "mail [EMAIL] now"),
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
    ("card 4242424242424242", "card [CARD]"),
    ("ssn 123-45-6789", "ssn [SSN]"),
    ("ip 10.1.2.3 here", "ip [IP] here"),
    ("call +1 415-555-0100 now", "call [PHONE] now"),
    ("call (415) 555-0100", "call [PHONE]"),
    ("call 415-555-0100", "call [PHONE]"),
    ("toll free 1-800-555-0199", "toll free [PHONE]"),
    ("ring +44 20 7946 0958", "ring [PHONE]"),
    ("berlin +49 30 901820", "berlin [PHONE]"),
]
NOT_PII = [  # left exactly as they are, in both modes
    "order 1234 5678 9012 3456",  # 16 digits, Luhn fails: neither a card nor a phone
    "card 4111 1111 1111 1112",
    "id 4111111111111112",
    "number 20240101 and 1234567",
    "version 3.14.159.26535",
    "1234 5678 9012 3456 7890",
    "date 2024-05-06 at 10:11:12",
    "zip 94103-1234",
    "a build 12345678901234567",
    "page 415 of 555",
]
FULL_MODE_ONLY = [("call 415 555 0100", "call [PHONE]")]  # spaces only: the narrow pattern leaves it


@pytest.mark.parametrize("mode", ["library", "pattern"])
@pytest.mark.parametrize(("text", "expected"), BOTH_MODES)
def test_pii_is_redacted_in_both_phone_modes(mode: str, text: str, expected: str) -> None:
    assert PiiRedactor(mode).redact(text)[0] == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["library", "pattern"])
@pytest.mark.parametrize("text", NOT_PII)
def test_false_positives_are_left_alone_in_both_phone_modes(mode: str, text: str) -> None:
    assert PiiRedactor(mode).redact(text) == (text, {})  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), FULL_MODE_ONLY)
def test_the_phone_library_finds_what_the_narrow_pattern_does_not(text: str, expected: str) -> None:
    assert PiiRedactor("library").redact(text)[0] == expected
    assert PiiRedactor("pattern").redact(text)[0] == text


def test_card_numbers_count_only_when_luhn_valid() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert PiiRedactor().redact("a 4111-1111-1111-1111 b")[1] == {"card": 1}


# -- replies -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("echo", [
    KEY, f"{KEY[:18]}******", f"{KEY[:18]}…", base64.b64encode(KEY.encode()).decode(),
    base64.b64encode(b"Authorization: Bearer " + KEY.encode()).decode(),
    base64.urlsafe_b64encode(b"k=" + KEY.encode() + b"&x=1").decode(),
], ids=["whole", "starred", "cut", "base64", "base64-inside", "urlsafe-inside"])
def test_an_echoed_secret_is_masked_whole_in_every_form(echo: str) -> None:
    masked = SecretMasker([KEY]).mask(f"here: {echo} (end)")
    assert masked == "here: [redacted] (end)"


def test_ordinary_text_is_left_alone_by_the_secret_masker() -> None:
    text = "sk-proj- keys start like this; abcDEF is a word; 123 is a number"
    assert SecretMasker([KEY]).mask(text) == text


def test_lone_surrogates_and_nul_are_replaced() -> None:
    assert clean_text("a\ud800b\x00c") == "a\ufffdb\ufffdc"
    assert clean_text("fine 🙂") == "fine 🙂"


async def test_one_bad_reply_is_cleaned_in_its_own_call_and_the_others_are_untouched(tmp_path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    config = fake_config(fake_entry("p", api_key=KEY))
    fleet = fleet_for(config)
    pool = ProviderPool([(p, fleet(p)) for p in config.providers], store.calls, config=config)
    fleet["p"].script(*(Reply(text=f"answer {i}") for i in range(10)), Reply(text=f"bad \ud800 {KEY}"),
                      *(Reply(text=f"answer {i}") for i in range(10, 19)))
    results = {}

    async def one(i: int) -> None:
        results[i] = await orchestrate(pool, store, config, OrchestrateRequest(prompt=f"q{i}"))

    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(one, i)
    texts = sorted(r.text for r in results.values())
    assert "bad \ufffd [redacted]" in texts and len([t for t in texts if t.startswith("answer")]) == 19
    await store.calls.flush()
    try:
        for result in results.values():
            turns = await store.conversations.load_turns(result.continuation_id)
            assert turns is not None and turns[-1][1] == result.text  # stored as returned: cleaned and masked
    finally:
        await store.aclose()


# -- ceilings --------------------------------------------------------------------------------------------------------


def priced_config(**limits) -> Config:
    return fake_config(fake_entry("free", priority=1),
                       fake_entry("dear", priority=2, input_cost_per_mtok=100.0, output_cost_per_mtok=1000.0),
                       limits=limits)


async def test_the_cost_ceiling_prices_a_call_at_the_providers_it_can_use() -> None:
    config = priced_config(max_cost_usd_per_call=0.01)  # one dear answer of 1024 tokens: about $1
    fleet = fleet_for(config)
    pool = ProviderPool([(p, fleet(p)) for p in config.providers], MemoryStore().calls, config=config)
    free = await pool.complete(REQUEST, providers=["free"])  # the dear one is configured, but cannot answer
    assert free.provider == "free"
    with pytest.raises(CeilingExceeded, match=r"could cost up to \$1\.02"):
        await pool.complete(REQUEST)  # may fall back to dear
    with pytest.raises(CeilingExceeded):
        await pool.complete(REQUEST, providers=["dear"])
    assert len(fleet["dear"].seen) == 0 and len(fleet["free"].seen) == 1


async def test_the_consensus_ceiling_counts_each_answerer_and_the_judge_at_its_own_price() -> None:
    config = fake_config(fake_entry("a", priority=1), fake_entry("b", priority=2), fake_entry("c", priority=3),
                         fake_entry("judge", priority=4, output_cost_per_mtok=100.0),
                         limits={"max_cost_usd_per_call": 0.05})
    fleet = fleet_for(config)
    async with Client(build_server(config, store_factory=MemoryStore, provider_factory=fleet)) as client:
        free = await client.call_tool("consensus", {"prompt": "?", "providers": ["a", "b", "c"]})
        judged = await client.call_tool("consensus", {"prompt": "?", "providers": ["a", "b", "c"],
                                                      "method": "synthesize", "judge": "judge", "max_tokens": 1000})
    assert not free.is_error  # three free answerers, however many
    assert judged.is_error and "ceiling" in judged.content[0].text  # the judge alone could cost $0.10
    assert fleet["judge"].seen == [] and len(fleet["a"].seen) == 1


async def test_the_token_ceiling_applies_per_answer() -> None:
    config = priced_config(max_tokens_per_call=100)
    fleet = fleet_for(config)
    pool = ProviderPool([(p, fleet(p)) for p in config.providers], MemoryStore().calls, config=config)
    with pytest.raises(CeilingExceeded, match="max_tokens 1024 is over"):
        await pool.complete(REQUEST, providers=["free"])
    assert fleet.seen() == []


# -- guardrails over the pool ------------------------------------------------------------------------------------


async def test_a_consensus_fan_out_records_one_input_decision_and_withholds_a_blocked_answer() -> None:
    store = MemoryStore()
    config = fake_config(*(fake_entry(n, priority=i) for i, n in enumerate("abc")),
                         guardrails={"redact_pii": True, "blocked_output_patterns": ["SECRET-\\d+"]})
    fleet = fleet_for(config)
    fleet["a"].script(Reply(text="yes"))
    fleet["b"].script(Reply(text="yes"))
    fleet["c"].script(Reply(text="yes SECRET-42"))
    async with Client(build_server(config, store_factory=lambda: store, provider_factory=fleet)) as client:
        result = await client.call_tool("consensus", {"prompt": "mail ada@example.com?", "max_providers": 3,
                                                      "method": "vote", "threshold": 1.0})
    out = result.structured_content
    assert {r["provider"]: (r["status"], r.get("error_class")) for r in out["responses"]} == {
        "a": ("ok", None), "b": ("ok", None), "c": ("error", "guardrail_blocked")}
    assert "SECRET" not in json.dumps(out)
    assert all(r.messages[0].content == "mail [EMAIL]?" for r in fleet.seen())
    inputs = [d for d in store.guardrails.decisions if d.stage == "input"]
    assert [(d.action, d.detail) for d in inputs] == [("redact", "email=1")]


async def test_naming_a_provider_whose_model_is_not_allowed_is_refused() -> None:
    config = fake_config(fake_entry("ok", model="allowed"), fake_entry("other", model="banned"),
                         guardrails={"allowed_models": ["allowed"]})
    fleet = fleet_for(config)
    pool = ProviderPool([(p, fleet(p)) for p in config.providers], MemoryStore().calls, config=config)
    assert [c.name for c in pool.configs] == ["ok"]
    with pytest.raises(GuardrailBlocked, match="allowed_models"):
        await pool.complete(REQUEST, providers=["other"])
    with pytest.raises(GuardrailBlocked, match="allowed_models"):
        pool.provider("other", await pool.call())
    assert fleet.seen() == []
