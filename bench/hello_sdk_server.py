"""A baseline for bench/startup.py: a hello-world MCPServer whose one tool asks a model through the official SDKs.

Written as a straightforward server would be: both SDKs imported and their clients built at start, one tool
that makes one completion. ``HELLO_OPENAI_BASE_URL`` and ``HELLO_ANTHROPIC_BASE_URL`` name the upstream.
"""

import os

import anthropic
import openai
from mcp.server import MCPServer

openai_client = openai.AsyncOpenAI(base_url=os.environ["HELLO_OPENAI_BASE_URL"], api_key="unused", max_retries=0)
anthropic_client = anthropic.AsyncAnthropic(base_url=os.environ["HELLO_ANTHROPIC_BASE_URL"], api_key="unused",
                                            max_retries=0)
mcp = MCPServer("hello-sdk")


@mcp.tool()
async def ask(prompt: str, kind: str = "openai") -> str:
    """Ask a model (kind openai or anthropic) and return its answer."""
    if kind == "anthropic":
        reply = await anthropic_client.messages.create(
            model="claude-sim", max_tokens=1024, messages=[{"role": "user", "content": prompt}])
        return reply.content[0].text
    completion = await openai_client.chat.completions.create(
        model="gpt-sim", max_tokens=1024, messages=[{"role": "user", "content": prompt}])
    return completion.choices[0].message.content or ""


if __name__ == "__main__":
    mcp.run()
