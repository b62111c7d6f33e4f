"""The package layout DESIGN.md and the architecture issue describe, checked on the source with ``ast``.

- the import graph of the product's packages (module-level imports, ``TYPE_CHECKING`` blocks aside) has no cycle;
- nothing in the MCP surface (``tools``, ``resources``, ``prompts``) imports the app assembly (``server.app``);
- no module is over 500 lines;
- ``server``'s top level holds packages and at most five modules (``__init__`` and ``__main__`` aside);
- nothing outside ``server/pool/`` imports the unscreened layers of the provider path (members, fallback,
  recording): the pool hands out providers only behind the policy layer;
- no domain error (a subclass of ``OrchestrationError``) is also a ``ValueError``, ``TypeError`` or
  ``PermissionError``, so only the root maps to a tool error with its message.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "tools", "resources", "prompts", "knowledge")
SURFACE = ("tools", "resources", "prompts")
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, modules: dict[str, Path], *, top_level_only: bool) -> set[str]:
    """The product modules ``name`` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
            elif not top_level_only or isinstance(node, (ast.If, ast.Try, ast.With)):
                body = [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
                visit(body)

    visit(tree.body)
    return {t for t in targets if t in modules and t != name}


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules, top_level_only=top_level_only) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that ends where it starts), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_module_level_import_graph_has_no_cycle() -> None:
    graph = _graph(top_level_only=True)
    assert len(graph) > 50  # the walk found the product's modules
    # A package's __init__ that re-exports its submodules is not a cycle of design: drop edges parent -> child.
    graph = {name: {t for t in targets if not t.startswith(f"{name}.")} for name, targets in graph.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_surface_never_imports_the_app_assembly() -> None:
    graph = _graph(top_level_only=False)
    offenders = sorted(f"{name} imports {t}" for name, targets in graph.items() if name.split(".")[0] in SURFACE
                       for t in targets if t == "server.app" or t.startswith("server.app."))
    assert not offenders, offenders


def test_no_module_is_over_500_lines() -> None:
    long = {str(path.relative_to(REPO)): n for path in _modules().values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_the_server_top_level_holds_packages_and_at_most_five_modules() -> None:
    modules = sorted(p.name for p in (REPO / "server").glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    packages = sorted(p.name for p in (REPO / "server").iterdir() if (p / "__init__.py").is_file())
    assert len(modules) <= 5, modules
    assert {"app", "pool", "consensus", "operations", "security", "store", "workflows"} <= set(packages), packages


# Issue 14, point 7: no process-wide side effects from library code, SDK-private access in one module.
RUNTIME_ANNOTATIONS = ("server.config", "server.agents.settings", "server.security.settings",
                       "server.workflows.settings", "server.workflows.model", "server.workflows.results",
                       "server.pool.orchestration", "server.consensus.report", "server.operations.summary")
"""Models built before ``tools/list`` besides the surface's own (the configuration, the tools' results)."""


def test_what_start_up_reads_annotates_with_objects_not_strings() -> None:
    # pydantic and the MCP SDK evaluate these modules' annotations while the server starts (the SDK three times
    # per tool function); a string annotation (PEP 563's `from __future__ import annotations`) is compiled at
    # each evaluation: some 700 compilations, about 20 ms of start -> tools/list (issue 17).
    modules = _modules()
    stringly = [name for name, path in sorted(modules.items())
                if (name.split(".")[0] in SURFACE or name in RUNTIME_ANNOTATIONS)
                and "from __future__ import annotations" in path.read_text(encoding="utf-8")]
    assert stringly == []


ENTRY_POINT = "server.app.cli"
"""The console script's module: with what only it imports, the one place that may set process-wide state (the
collector, sys.modules)."""
SDK_SEAMS = "server.app.sdk_seams"
"""The one module that may reach SDK-private names (each seam documented there)."""
SDK_PACKAGES = ("mcp", "mcp_types")


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in _modules().items()}


def _own_private_names(trees: dict[str, ast.Module]) -> set[str]:
    """Every ``_name`` this project defines (functions, classes, attributes it assigns, fields, slots)."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                names.add(node.value)  # __slots__ entries, attribute names given as strings
    return {name for name in names if name.startswith("_")}


def _sdk_imported_names(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in SDK_PACKAGES:
            found.update(alias.asname or alias.name for alias in node.names)
    return found


NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})
"""Public, documented namedtuple methods (underscored only to stay clear of field names; ``urlsplit`` results)."""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and \
        name not in NAMEDTUPLE_API


def _entry_point_only() -> set[str]:
    """The entry point and the modules that only it imports (what "the entry point" may delegate to)."""
    graph = _graph(top_level_only=False)
    importers: dict[str, set[str]] = {}
    for name, targets in graph.items():
        for target in targets:
            importers.setdefault(target, set()).add(name)
    return {ENTRY_POINT} | {name for name, found in importers.items() if found == {ENTRY_POINT}}


def test_nothing_outside_the_entry_point_touches_the_collector_or_sys_modules() -> None:
    allowed = _entry_point_only()
    assert "server.app.process_settings" in allowed  # the one module that holds these settings
    offenders = []
    for name, tree in _trees().items():
        if name in allowed:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                if "gc" in imported:
                    offenders.append(f"{name}:{node.lineno} imports gc")
            elif isinstance(node, ast.Attribute) and node.attr == "modules" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                offenders.append(f"{name}:{node.lineno} uses sys.modules")
    assert not offenders, offenders


def test_sdk_private_names_are_reached_only_through_the_sdk_seams_module() -> None:
    trees = _trees()
    own = _own_private_names({n: t for n, t in trees.items() if n != SDK_SEAMS})
    offenders = []
    for name, tree in trees.items():
        if name == SDK_SEAMS:
            continue
        # `argparse._SubParsersAction`: another library's private name is not the SDK's (and not this rule's)
        other_modules = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                         for alias in node.names if alias.name.split(".")[0] not in SDK_PACKAGES}
        for node in ast.walk(tree):
            attr = None
            if isinstance(node, ast.Attribute) and _is_private(node.attr) and not (
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", *other_modules)):
                attr = node.attr
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2 and \
                    isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) and \
                    _is_private(node.args[1].value):
                attr = node.args[1].value
            if attr is not None and attr not in own:
                offenders.append(f"{name}:{node.lineno} reaches {attr}")
    assert not offenders, offenders


def test_nothing_builds_sdk_objects_with_model_construct() -> None:
    offenders = []
    for name, tree in _trees().items():
        sdk = _sdk_imported_names(tree)
        subclasses = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                      and any(isinstance(base, ast.Name) and base.id in sdk for base in node.bases)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "model_construct" and \
                    isinstance(node.value, ast.Name) and node.value.id in sdk | subclasses:
                offenders.append(f"{name}:{node.lineno} {node.value.id}.model_construct")
    assert not offenders, offenders


def test_the_sdk_seams_say_which_sdk_version_they_were_checked_against() -> None:
    from importlib import metadata

    import server.app.sdk_seams as seams

    assert seams.SDK_VERSION_CHECKED in seams.__doc__
    assert metadata.version("mcp").split(".")[:2] == seams.SDK_VERSION_CHECKED.split(".")[:2], (
        "the installed MCP SDK is another minor version: check every seam in server/app/sdk_seams.py against it")
    public = [f for f in vars(seams).values() if callable(f) and getattr(f, "__module__", "") == seams.__name__]
    assert public and all("Why:" in (f.__doc__ or "") and "Private:" in (f.__doc__ or "") for f in public)


UNSCREENED = ("server.pool.member", "server.pool.fallback", "server.pool.recording")


def test_nothing_outside_the_pool_reaches_the_unscreened_provider_path() -> None:
    graph = _graph(top_level_only=False)
    offenders = sorted(f"{name} imports {t}" for name, targets in graph.items()
                       if not name.startswith("server.pool") for t in targets if t in UNSCREENED)
    assert not offenders, offenders
    assert not (REPO / "tools" / "_guard.py").exists()  # the surface does not screen: the core does


def test_no_domain_error_is_also_a_builtin_value_or_permission_error() -> None:
    classes: list[tuple[str, str, set[str]]] = []  # (module, class, base names)
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.append((module, node.name, {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                                                    if isinstance(b, (ast.Name, ast.Attribute))}))
    domain = {"OrchestrationError"}
    while True:
        grown = domain | {name for _, name, bases in classes if bases & domain}
        if grown == domain:
            break
        domain = grown
    assert len(domain) > 30  # the walk found the domain errors (pool, policy, workflows, knowledge …)
    mixed = sorted(f"{module}.{name}" for module, name, bases in classes
                   if bases & domain and bases & {"ValueError", "TypeError", "PermissionError"})
    assert not mixed, mixed



def test_a_lazy_export_is_imported_at_first_use_and_kept() -> None:
    from server import lazy_exports

    namespace: dict = {"__name__": "email"}
    getattr_ = lazy_exports({"Charset": "charset"}, namespace)
    import email.charset

    assert getattr_("Charset") is email.charset.Charset and namespace["Charset"] is email.charset.Charset
    try:
        getattr_("Parser")  # a real submodule's name, but not one of the exports
    except AttributeError as error:
        assert str(error) == "module 'email' has no attribute 'Parser'"
    else:
        raise AssertionError("an unknown name was resolved")
