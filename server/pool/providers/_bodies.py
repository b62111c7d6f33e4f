"""The request bodies of the two wire formats, built once for both kinds of provider.

The SDK providers pass these as keyword arguments to ``chat.completions.create`` / ``messages.create``; the
wire-protocol providers post them as JSON. One builder per format keeps the two modes sending the same request.
"""

from __future__ import annotations

from typing import Any

from server.pool.providers import CompletionRequest

JSON_INSTRUCTION = "Respond with a single valid JSON value and nothing else: no prose, no code fences."


def openai_chat_body(model: str, request: CompletionRequest, *, vendor_endpoint: bool) -> dict[str, Any]:
    """An OpenAI Chat Completions request body (https://platform.openai.com/docs/api-reference/chat/create).

    Args:
        vendor_endpoint: OpenAI's own API (no ``base_url``), which wants ``max_completion_tokens`` (reasoning
            models refuse ``max_tokens``); compatible servers (Ollama, vLLM, LM Studio) know only ``max_tokens``.
    """
    messages: list[dict[str, str]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.extend({"role": m.role, "content": m.content} for m in request.messages)
    body: dict[str, Any] = {"model": model, "messages": messages}
    body["max_completion_tokens" if vendor_endpoint else "max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.response_format == "json":
        # JSON mode needs the word "JSON" in the messages; the instruction also helps compatible servers.
        body["response_format"] = {"type": "json_object"}
        messages.insert(0, {"role": "system", "content": JSON_INSTRUCTION})
    return body


def anthropic_messages_body(model: str, request: CompletionRequest) -> dict[str, Any]:
    """An Anthropic Messages request body (https://docs.anthropic.com/en/api/messages).

    No ``temperature``: the Messages API of SDK 2.x takes none. JSON mode is a system instruction (the API has
    no plain JSON mode; structured outputs need a schema).
    """
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    system = request.system
    if request.response_format == "json":
        system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
    if system:
        body["system"] = system
    return body
