"""How ``armctl version lineage`` writes a lineage sheet (``evidence.lineage.sheet``): plain text
for a terminal, Markdown for a pull request, an audit file or a wiki page. Pure: a sheet in,
lines out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["change_lines", "markdown", "text"]


def _short(value: str | None) -> str:
    return f"{value[:19]}…" if value and value.startswith("sha256:") else str(value)


def _value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False) if not isinstance(value, str) else value


def _when(at: str | None) -> str:
    return (at or "?")[:16].replace("T", " ")


def change_lines(changes: Mapping[str, Any], code: Callable[[str], str] = str) -> list[str]:
    """One line per change of the genome; ``code`` marks names and hashes (Markdown: backticks)."""
    lines = [f"{code(c['field'])}: {code(_value(c['from']))} → {code(_value(c['to']))}" for c in changes["model"]]
    prompts = changes["prompts"]
    lines += [f"prompt added ({p['role']}): {code(_short(p['contentHash']))}" for p in prompts["added"]]
    lines += [f"prompt removed ({p['role']}): {code(_short(p['contentHash']))}" for p in prompts["removed"]]
    lines += [f"prompt changed ({p['role']}): {code(_short(p['from']))} → {code(_short(p['to']))}" for p in prompts["changed"]]
    tools = changes["tools"]
    if tools["added"]:
        lines.append("tools added: " + ", ".join(code(t) for t in tools["added"]))
    if tools["removed"]:
        lines.append("tools removed: " + ", ".join(code(t) for t in tools["removed"]))
    lines += [
        f"tool {code(t['name'])} configuration: {code(_value(t['from']))} → {code(_value(t['to']))}" for t in tools["changed"]
    ]
    lines += [f"{code(c['field'])}: {code(_value(c['from']))} → {code(_value(c['to']))}" for c in changes["memory"]]
    return lines or ["genome unchanged apart from its provenance"]


def _step_line(step: Mapping[str, Any], code: Callable[[str], str] = str) -> str:
    who = f"operator {step['operator']}" if step["operator"] else step["author"] or "the reconciler"
    commit = f" in {code(step['sha'][:12])}" if step["sha"] else ""
    if step["type"] == "VERSION_TRANSITIONED":
        return f"{step['from']} → {step['to']} at {_when(step['at'])}{commit} by {who} (record {step['seq']})"
    return f"{step['type']} at {_when(step['at'])} (record {step['seq']})"


def _approval_lines(approval: Mapping[str, Any]) -> list[str]:
    head = f"#{approval['id']} {approval['transition']}: {approval['status']}"
    if not approval["decisions"]:
        return [head + f" (requested {_when(approval['requestedAt'])})"]
    return [head] + [
        f"{d['decision']} by {d['operator']} at {_when(d['at'])}: {d['justification'] or '-'}" for d in approval["decisions"]
    ]


def _deployment_line(d: Mapping[str, Any]) -> str:
    until = _when(d["until"]) if d["until"] else "now"
    rollout = f", {d['rollout']}" if d["rollout"] else ""
    return f"{d['deployment']} generation {d['generation']} in {d['environment']}: {_when(d['from'])} → {until} ({d['state']}{rollout})"


def text(sheet: Mapping[str, Any]) -> list[str]:
    out = [f"Lineage of {sheet['version']} (template {sheet['template']}, tenant {sheet['tenant']}), oldest first", ""]
    for index, g in enumerate(sheet["ancestry"]):
        if index:
            out.append("  │")
        integrity = "" if g["integrity"] == "OK" else " INTEGRITY FAILED"
        out.append(f"{g['name']}  {g['lifecycle']}{integrity}  {g['genomeHash']}")
        created = g["created"]
        out.append(f"  created {_when(created['at'])} in {(created['sha'] or '?')[:12]} by {created['author'] or '?'}")
        if g["changes"] is None:
            out.append(f"  first version: {g['model']}")
        else:
            out.append(f"  changes from {g['parent']}:")
            out += [f"    {line}" for line in change_lines(g["changes"])]
        if g["steps"]:
            out.append("  steps:")
            out += [f"    {_step_line(s)}" for s in g["steps"]]
        if g["approvals"]:
            out.append("  approvals:")
            for approval in g["approvals"]:
                first, *rest = _approval_lines(approval)
                out += [f"    {first}"] + [f"      {line}" for line in rest]
        out.append("  deployed:" + ("" if g["deployments"] else " never"))
        out += [f"    {_deployment_line(d)}" for d in g["deployments"]]
    if sheet["children"]:
        out += ["", f"Children of {sheet['version']}: {', '.join(sheet['children'])}"]
    return out


def _code(value: str) -> str:
    return f"`{value}`"


def markdown(sheet: Mapping[str, Any]) -> list[str]:
    out = [f"# Lineage of `{sheet['version']}`", "",
           f"Template `{sheet['template']}`, tenant `{sheet['tenant']}`; oldest first.", ""]  # fmt: skip
    for g in sheet["ancestry"]:
        created = g["created"]
        out += [f"## `{g['name']}`", ""]
        out += [
            f"- **Lifecycle:** {g['lifecycle']}" + ("" if g["integrity"] == "OK" else " — **integrity FAILED**"),
            f"- **Genome:** `{g['genomeHash']}` ({g['model']})",
            f"- **Created:** {_when(created['at'])} in `{(created['sha'] or '?')[:12]}` by {created['author'] or '?'}",
        ]
        if g["changes"] is None:
            out.append("- **Changes:** first version")
        else:
            out.append(f"- **Changes from `{g['parent']}`:**")
            out += [f"  - {line}" for line in change_lines(g["changes"], _code)]
        if g["steps"]:
            out.append("- **Steps:**")
            out += [f"  - {_step_line(s, _code)}" for s in g["steps"]]
        if g["approvals"]:
            out.append("- **Approvals:**")
            for approval in g["approvals"]:
                first, *rest = _approval_lines(approval)
                out += [f"  - {first}"] + [f"    - {line}" for line in rest]
        out.append("- **Deployed:**" + ("" if g["deployments"] else " never"))
        out += [f"  - {_deployment_line(d)}" for d in g["deployments"]]
        out.append("")
    if sheet["children"]:
        out += [f"Children of `{sheet['version']}`: " + ", ".join(f"`{c}`" for c in sheet["children"]), ""]
    return out
