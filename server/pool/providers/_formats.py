"""The two wire formats (OpenAI Chat Completions, Anthropic Messages): request bodies and replies, written once
for both kinds of provider.

The SDK providers post these bodies through their SDK client, the wire-protocol providers through ``httpx2``,
and both read the reply's JSON with the same readers: the two modes send the same request and understand the
same answer.
"""

from __future__ import annotations

import json
from typing import Any

from server.config import ProviderConfig
from server.errors import MalformedReply
from server.pool.providers import Completion, CompletionRequest, Usage

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


def reply_object(provider: str, content: bytes) -> dict[str, Any]:
    """A successful reply's JSON object.

    Raises:
        MalformedReply: the body is not JSON, or not a JSON object.
    """
    try:
        reply = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedReply(provider, f"unreadable reply ({type(exc).__name__})") from exc
    if not isinstance(reply, dict):
        raise MalformedReply(provider, "reply is not a JSON object")
    return reply


def openai_chat_completion(provider: str, model: str, reply: dict[str, Any]) -> Completion:
    """The completion in a Chat Completions reply (``choices[0].message.content``, ``usage``); ``model`` when the
    reply names none.

    Raises:
        MalformedReply: no choices, or no text content.
    """
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
            or not isinstance(choices[0].get("message"), dict):
        raise MalformedReply(provider, "reply has no choices")
    text = choices[0]["message"].get("content")
    if not isinstance(text, str):
        raise MalformedReply(provider, "reply has no text content")
    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    return Completion(text=text, model=_model(reply, model),
                      usage=Usage(input_tokens=number(usage.get("prompt_tokens")),
                                  output_tokens=number(usage.get("completion_tokens"))),
                      finish_reason=choices[0].get("finish_reason"))


def anthropic_messages_completion(provider: str, model: str, reply: dict[str, Any]) -> Completion:
    """The completion in a Messages reply (its ``text`` content blocks joined, ``usage``); ``model`` when the
    reply names none.

    Raises:
        MalformedReply: no content blocks, or no text block.
    """
    blocks = reply.get("content")
    if not isinstance(blocks, list):
        raise MalformedReply(provider, "reply has no content blocks")
    texts = [block["text"] for block in blocks
             if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)]
    if not texts:
        raise MalformedReply(provider, "reply has no text block")
    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    return Completion(text="".join(texts), model=_model(reply, model),
                      usage=Usage(input_tokens=number(usage.get("input_tokens")),
                                  output_tokens=number(usage.get("output_tokens"))),
                      finish_reason=reply.get("stop_reason"))


def _model(reply: dict[str, Any], default: str) -> str:
    model = reply.get("model")
    return model if isinstance(model, str) and model else default


def number(value: Any) -> int:
    """A token count from a reply field (missing or not a number: 0)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


class OpenAIChatFormat:
    """The Chat Completions format of a provider (mixed into the SDK and the wire-protocol provider)."""

    name: str
    model: str
    config: ProviderConfig
    default_base_url = "https://api.openai.com/v1"

    def _path(self) -> str:
        return "/chat/completions"

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        return openai_chat_body(self.model, request, vendor_endpoint=self.config.base_url is None)

    def _completion(self, reply: dict[str, Any]) -> Completion:
        return openai_chat_completion(self.name, self.model, reply)


class AnthropicMessagesFormat:
    """The Messages format of a provider (mixed into the SDK and the wire-protocol provider)."""

    name: str
    model: str
    default_base_url = "https://api.anthropic.com"

    def _path(self) -> str:
        return "/v1/messages"

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        return anthropic_messages_body(self.model, request)

    def _completion(self, reply: dict[str, Any]) -> Completion:
        return anthropic_messages_completion(self.name, self.model, reply)
