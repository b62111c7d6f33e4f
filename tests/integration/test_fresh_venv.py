"""Simple mode where nothing but ``mcp`` is installed: a fresh venv with ``mcp`` and this project (``--no-deps``),
driven over stdio by a real client against the local upstream, restarted, and asked for its pattern again.

The venv (no pip, no setuptools: only what ``mcp`` brings) is cached under ``.cache/fresh-venv/`` per Python and
``mcp`` version, installed from the package registry the first time; the project is rebuilt as a wheel from the
working tree and reinstalled into it on every run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

import tools
from server.simulator import Behaviour, Upstream
from tests.import_audit import REPO, requirement_closure

MCP_VERSION = metadata.version("mcp")
CACHE = REPO / ".cache" / "fresh-venv" / f"py{sys.version_info.major}.{sys.version_info.minor}-mcp{MCP_VERSION}"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
PROJECT_FILES = ("pyproject.toml", "README.md", "server", "tools", "resources", "prompts", "knowledge")


def _run(command: list[str], timeout_s: float = 600) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-3000:]}"


def _mcp_venv() -> Path:
    """The cached venv holding ``mcp`` (and its dependencies) only; built once, atomically renamed into place."""
    if (CACHE / "ready").exists():
        return CACHE
    building = CACHE.with_name(CACHE.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--without-pip", str(building)])
    # The outer pip installs into the venv (pip --python): the venv itself gets neither pip nor setuptools.
    _run([*PIP, "--python", str(building / "bin" / "python"), "install", f"mcp=={MCP_VERSION}"])
    (building / "ready").write_text(f"mcp=={MCP_VERSION}\n")
    shutil.rmtree(CACHE, ignore_errors=True)
    building.rename(CACHE)
    return CACHE


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The venv with ``mcp`` and the project as the working tree has it now (a wheel, installed ``--no-deps``)."""
    venv = _mcp_venv()
    source = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    wheels = tmp_path_factory.mktemp("wheel")
    _run([*PIP, "wheel", "--no-deps", "-w", str(wheels), str(source)])
    wheel = next(wheels.glob("*.whl"))
    _run([*PIP, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--force-reinstall", str(wheel)])
    yield venv


def test_the_fresh_venv_holds_mcp_its_dependencies_and_the_project_only(fresh_venv: Path) -> None:
    listing = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c",
         "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"],
        capture_output=True, text=True, check=True, timeout=60).stdout.split()
    from packaging.utils import canonicalize_name

    installed = {canonicalize_name(name) for name in listing}
    assert {"openai", "anthropic", "sqlite-utils", "opentelemetry-sdk", "dbos", "pip"}.isdisjoint(installed)
    assert installed - requirement_closure("mcp") == {"ai-orchestration-mcp"}


def _config(folder: Path, upstream: Upstream) -> Path:
    path = folder / "config.toml"
    path.write_text(
        f'[[providers]]\nname = "gpt"\nkind = "openai"\nmodel = "gpt-sim"\npriority = 1\n'
        f'base_url = "{upstream.openai_base_url}"\n'
        f'[[providers]]\nname = "claude"\nkind = "anthropic"\nmodel = "claude-sim"\npriority = 2\n'
        f'base_url = "{upstream.url}"\n')
    return path


@pytest.mark.anyio
async def test_simple_mode_in_the_fresh_venv_serves_the_tools_and_keeps_a_pattern_across_a_restart(
        fresh_venv: Path, tmp_path: Path, upstream: Upstream) -> None:
    config = _config(tmp_path, upstream)
    data = tmp_path / "data"
    params = StdioServerParameters(
        command=str(fresh_venv / "bin" / "ai-orchestration-mcp"), args=["--simple", "--config", str(config)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(data)},
        cwd=str(tmp_path))  # not the checkout: the installed package, never the working tree, is imported
    with anyio.fail_after(90):
        async with Client(params, mode="legacy") as client:
            assert {t.name for t in (await client.list_tools()).tools} == tools.SIMPLE_MODE_TOOLS
            answer = (await client.call_tool("orchestrate", {"prompt": "hello from a fresh venv"})).structured_content
            assert (answer["provider"], answer["text"]) == ("gpt", "[gpt-sim] hello from a fresh venv")
            upstream.script("gpt-sim", Behaviour(text="Paris"))
            upstream.script("claude-sim", Behaviour(text="paris."))
            agreed = (await client.call_tool("consensus", {"prompt": "Capital of France?", "method": "vote"}))
            assert not agreed.is_error, agreed.content[0].text
            assert (agreed.structured_content["status"], len(agreed.structured_content["responses"])) == ("consensus", 2)
            registered = await client.call_tool("register_pattern", {
                "name": "capital", "description": "Ask for a capital city.", "template": "Capital of {{ country }}?"})
            assert not registered.is_error and registered.structured_content["version"] == 1
    assert {r.wire for r in upstream.requests} == {"openai", "anthropic"}
    assert (data / "ai-orchestration-mcp" / "state.json").is_file()
    with anyio.fail_after(90):
        async with Client(params, mode="legacy") as client:  # a new process over the same data directory
            prompt = await client.get_prompt("capital", {"country": "Peru"})
            assert prompt.messages[0].content.text == "Capital of Peru?"
            resource = await client.read_resource("knowledge://patterns/capital")
            assert '"version": 1' in resource.contents[0].text
