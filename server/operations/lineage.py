"""A workflow run's lineage, from its audit entries: who started it, what each step saw (the hash of its
rendered parameters) and produced (the hash of its output), which provider and model answered, which guardrail
decisions its calls met, who approved and with what comment, and how it ended; as JSON and as a Mermaid
``flowchart`` (:func:`lineage_mermaid`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.operations.audit import entry_json
from server.store import AuditEntry


def run_lineage(run_id: str, entries: Sequence[AuditEntry]) -> dict[str, Any]:
    """``{"run_id", "workflow", "started_by", "started_at", "status", "steps": [...], "approvals": [...],
    "entries": [...], "mermaid"}`` for the entries of one run (in append order)."""
    started = next((e for e in entries if e.action == "run.started"), None)
    finished = next((e for e in entries if e.action == "run.finished"), None)
    steps: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry.action == "step.finished" and entry.step is not None:
            steps[entry.step] = {"step": entry.step, "actor": entry.actor, "at": entry.ts,
                                 "input_sha256": entry.input_sha256, "output_sha256": entry.output_sha256,
                                 **entry.detail, "guardrails": steps.get(entry.step, {}).get("guardrails", [])}
        elif entry.action.startswith("guardrail.") and entry.step is not None:
            steps.setdefault(entry.step, {"step": entry.step, "guardrails": []})["guardrails"].append(
                {"action": entry.action.split(".", 1)[1], **entry.detail})
    approvals = [{"step": e.step, "approver": e.actor, **e.detail, "at": e.ts} for e in entries
                 if e.action == "approval.decided"]
    lineage = {
        "run_id": run_id,
        "workflow": started.detail.get("workflow") if started else None,
        "started_by": started.actor if started else None,
        "started_at": started.ts if started else None,
        "inputs_sha256": started.input_sha256 if started else None,
        "status": finished.detail.get("status") if finished else "unfinished",
        "outputs_sha256": finished.output_sha256 if finished else None,
        "steps": list(steps.values()),
        "approvals": approvals,
        "entries": [entry_json(e) for e in entries],
    }
    lineage["mermaid"] = lineage_mermaid(lineage)
    return lineage


def _label(text: str) -> str:
    return text.replace('"', "'").replace("<", "&lt;").replace(">", "&gt;")


def lineage_mermaid(lineage: dict[str, Any]) -> str:
    """A ``flowchart TD``: the start (who), one node per step (kind, status, provider/model or approver), an
    edge per dependency, guardrail decisions hanging off their step, and the end."""
    starter = _label(f"started by {lineage['started_by']}")
    lines = ["flowchart TD", f'    start(["{starter}"])']
    ids = {s["step"]: f"s{i}" for i, s in enumerate(lineage["steps"])}
    for step in lineage["steps"]:
        node = ids[step["step"]]
        facts = [str(step.get("kind", "")), str(step.get("status", ""))]
        if step.get("provider"):
            facts.append(f"{step['provider']}/{step.get('model')}")
        if step.get("kind") == "approval" and step.get("by"):
            facts.append(f"{step.get('decision')} by {step['by']}")
        text = f"{_label(step['step'])}<br/>{_label(' · '.join(f for f in facts if f))}"
        lines.append(f'    {node}{{{{"{text}"}}}}' if step.get("kind") == "approval" else f'    {node}["{text}"]')
        deps = [d for d in step.get("depends_on", []) if d in ids]
        lines += [f"    {ids[d]} --> {node}" for d in deps] or [f"    start --> {node}"]
        for j, decision in enumerate(d for d in step.get("guardrails", []) if d.get("action") != "allow"):
            note = _label(f"guardrail {decision.get('action')}: {decision.get('rule')}")
            lines.append(f'    {node}g{j}>"{note}"]')
            lines.append(f"    {node} -.- {node}g{j}")
    lines.append(f'    finish(["{_label(str(lineage["status"]))}"])')
    ends = {s["step"] for s in lineage["steps"]} - {d for s in lineage["steps"] for d in s.get("depends_on", [])}
    lines += [f"    {ids[e]} --> finish" for e in ends] or ["    start --> finish"]
    return "\n".join(lines)
