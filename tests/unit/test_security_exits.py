"""In process: the pieces that keep secrets and hostile addresses out (redaction forms, log records, span
export, the address policy with its embedded-IPv4 forms, the pinning transport) and the per-key session
bookkeeping."""

from __future__ import annotations

import base64
import ipaddress
import logging
import socket
from typing import Any

import httpx2
import pytest

from server.security.addresses import AddressPolicy, AddressRefused, check_url, embedded_ipv4
from server.security.hygiene import redact_log_records
from server.security.outbound import OutboundRefused, outbound_client
from server.security.redact import redact
from server.security.sessions import GRACE_S, SessionLimiter

KEY = "7f3a9c1e5b2d4f60a8e1c3b5"  # 24 characters, no recognisable shape: only the configured value finds it


# -- redaction forms ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"your key is {KEY}.", f"key {KEY[:18]}****** (masked)", f"key ****{KEY[6:]}", f"cut: {KEY[:12]}",
    f"b64 {base64.b64encode(KEY.encode()).decode()}", f"b64 {base64.b64encode(b'x' + KEY.encode()).decode()}",
    f"b64 {base64.b64encode(b'xy' + KEY.encode() + b'z').decode()}",
    f"url-safe {base64.urlsafe_b64encode(b'??' + KEY.encode()).decode()}",
])
def test_a_secret_whole_partly_or_base64_encoded_is_redacted(text: str) -> None:
    cleaned = redact(text, [KEY])
    assert "[redacted]" in cleaned
    assert KEY[:12] not in cleaned and KEY[6:18] not in cleaned and KEY[-12:] not in cleaned
    for encoded in (base64.b64encode(KEY.encode()).decode(), base64.urlsafe_b64encode(KEY.encode()).decode()):
        assert encoded[4:-4] not in cleaned


def test_text_sharing_only_a_few_characters_or_a_path_with_a_secret_is_left_alone() -> None:
    path_value = "/usr/local/lib/python3.11/site-packages"  # an env value: redacted whole, never in fragments
    text = f"at {KEY[:8]} and {KEY[-8:]} in /usr/local/lib/python3.11/dist-packages"
    assert redact(text, [KEY, path_value]) == text
    assert redact(f"PYTHONPATH={path_value}", [path_value]) == "PYTHONPATH=[redacted]"


def test_every_log_record_is_redacted_whatever_formats_it() -> None:
    original = logging.getLogRecordFactory()
    seen: list[str] = []

    class Plain(logging.Handler):  # a library's own handler and formatter, not the entry point's
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(logging.Formatter("%(message)s").format(record))

    log = logging.getLogger("tests.exits.records")
    handler = Plain()
    log.addHandler(handler)
    try:
        redact_log_records([KEY])
        try:
            raise RuntimeError(f"upstream said {KEY}")
        except RuntimeError:
            log.error("failed with %s and %s", KEY[:18] + "******", "sk-ant-api03-abcdefghijkl", exc_info=True)
    finally:
        logging.setLogRecordFactory(original)
        log.removeHandler(handler)
    assert seen and "Traceback" in seen[0] and "RuntimeError" in seen[0]
    assert KEY[:12] not in seen[0] and "sk-ant-api03" not in seen[0]


def test_spans_leave_with_secrets_redacted_in_status_attributes_and_events() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from server.operations.span_redaction import RedactingSpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(memory, [KEY])))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("MCP send tools/call x", attributes={"url": f"http://h/?k={KEY}",
                                                                          "list": ["a", KEY], "n": 3}) as span:
        span.set_status(StatusCode.ERROR, f"refused: x-api-key {KEY} is not accepted here")
        span.record_exception(ValueError(f"bad {KEY}"))
    with tracer.start_as_current_span("clean", attributes={"n": 1}):
        pass
    provider.shutdown()
    leaked, clean = memory.get_finished_spans()
    dumped = leaked.to_json() + clean.to_json()
    assert KEY not in dumped and KEY[:12] not in dumped
    assert leaked.status.description == "refused: x-api-key [redacted] is not accepted here"
    assert leaked.attributes["list"] == ("a", "[redacted]") and leaked.attributes["n"] == 3
    assert leaked.events[0].attributes["exception.message"] == "bad [redacted]"
    assert clean.attributes["n"] == 1 and clean.name == "clean"


# -- the address policy --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "64:ff9b::a9fe:a9fe",            # NAT64 well-known prefix (RFC 6052)
    "64:ff9b:1:a9fe:a9:fe00::",      # NAT64 local-use prefix, /48 format (RFC 8215)
    "::ffff:169.254.169.254",        # IPv4-mapped
    "::ffff:0:a9fe:a9fe",            # IPv4-translated
    "::a9fe:a9fe",                   # IPv4-compatible
    "2002:a9fe:a9fe::1",             # 6to4
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254 (obfuscated)
    "2001:db8::5efe:a9fe:a9fe",      # ISATAP interface identifier
    "64:ff9b::a9fe:101",             # NAT64 of a link-local address (169.254.1.1)
])
def test_ipv6_forms_carrying_a_refused_ipv4_address_are_refused_like_it(address: str) -> None:
    assert embedded_ipv4(ipaddress.IPv6Address(address))
    with pytest.raises(AddressRefused, match="carried in an IPv6 address|metadata|link-local"):
        check_url(f"http://[{address}]/v1")


@pytest.mark.parametrize("address", ["64:ff9b::a00:1", "::1", "2001:db8::1", "2002:a00:1::1"])
def test_ipv6_forms_carrying_an_allowed_address_pass(address: str) -> None:
    check_url(f"http://[{address}]:8000/v1")


def test_deny_addresses_refuses_more_and_wins_over_allow_addresses() -> None:
    check_url("http://10.1.2.3/v1")
    with pytest.raises(AddressRefused, match="deny_addresses"):
        check_url("http://10.1.2.3/v1", deny=["10.0.0.0/8"])
    with pytest.raises(AddressRefused, match="deny_addresses"):
        check_url("http://[::ffff:10.1.2.3]/v1", deny=["10.0.0.0/8"])  # through an IPv6 form too
    with pytest.raises(AddressRefused, match="deny_addresses"):
        check_url("http://169.254.169.254/", allow=["169.254.0.0/16"], deny=["169.254.169.254/32"])
    with pytest.raises(AddressRefused, match="deny_addresses"):
        check_url("http://models.internal/v1", deny=["models.internal"])


def resolver(*addresses: str) -> Any:
    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0))
                for a in addresses]
    return resolve


@pytest.mark.anyio
async def test_each_request_is_pinned_to_a_checked_address_with_host_and_tls_name_kept() -> None:
    seen: list[httpx2.Request] = []

    def reply(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.host == "::1":
            raise httpx2.ConnectError("unreachable", request=request)  # the next address is tried
        return httpx2.Response(200, text="ok")

    client = outbound_client(AddressPolicy(resolve=resolver("::1", "127.0.0.1")),
                             transport=httpx2.MockTransport(reply))
    async with client:
        answered = await client.post("https://models.test:8443/v1/chat?x=1", json={"a": 1})
    assert answered.status_code == 200
    assert [str(r.url) for r in seen] == ["https://[::1]:8443/v1/chat?x=1", "https://127.0.0.1:8443/v1/chat?x=1"]
    assert {r.headers["host"] for r in seen} == {"models.test:8443"}
    assert {r.extensions["sni_hostname"] for r in seen} == {"models.test"}
    assert seen[-1].content == b'{"a":1}'


@pytest.mark.anyio
@pytest.mark.parametrize("addresses", [("127.0.0.1", "169.254.169.254"), ("64:ff9b::a9fe:a9fe",)])
async def test_a_request_whose_name_resolves_to_a_refused_address_is_never_sent(addresses: tuple[str, ...]) -> None:
    sent: list[httpx2.Request] = []
    client = outbound_client(AddressPolicy(resolve=resolver(*addresses)),
                             transport=httpx2.MockTransport(lambda r: sent.append(r) or httpx2.Response(200)))
    async with client:
        with pytest.raises(OutboundRefused, match="169.254.169.254"):
            await client.get("http://innocent.test/v1")
    assert sent == []


@pytest.mark.anyio
async def test_redirects_are_not_followed() -> None:
    sent: list[str] = []

    def reply(request: httpx2.Request) -> httpx2.Response:
        sent.append(str(request.url))
        return httpx2.Response(307, headers={"location": "http://127.0.0.1:1/elsewhere"})

    async with outbound_client(AddressPolicy(), transport=httpx2.MockTransport(reply)) as client:
        answered = await client.post("http://127.0.0.1:9/v1/chat", json={})
    assert answered.status_code == 307 and sent == ["http://127.0.0.1:9/v1/chat"]


# -- per-key sessions ---------------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_keys_sessions_are_counted_until_deleted_gone_or_idle() -> None:
    clock = Clock()
    limiter = SessionLimiter(max_per_key=2, idle_s=60, clock=clock)
    assert limiter.reserve("a") is None and limiter.reserve("a") is None
    assert limiter.reserve("a") == 60  # two opening requests in flight hold both slots
    limiter.settle("a", "s1")
    limiter.settle("a", None)  # the second one failed: its slot is free again
    assert limiter.reserve("a") is None
    limiter.settle("a", "s2")
    assert limiter.reserve("b") is None  # another key is not affected
    clock.now += 30
    assert limiter.reserve("a") == pytest.approx(30 + GRACE_S)  # s1 idles out first
    assert limiter.begin("a", "s1") and not limiter.begin("b", "s1")  # only its own key's request counts
    clock.now += 100
    assert limiter.open_sessions("a") == 1  # s2 idled out; s1 has a request in flight (a GET stream, say)
    limiter.end("a", "s1", gone=False)
    clock.now += 60 + GRACE_S
    assert limiter.open_sessions("a") == 0
    assert limiter.reserve("a") is None
    limiter.settle("a", "s3")
    assert limiter.begin("a", "s3")
    limiter.end("a", "s3", gone=True)  # DELETE answered, or the SDK no longer knew it (404)
    assert limiter.open_sessions("a") == 0
