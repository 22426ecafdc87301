"""How a plan looks: grouped, coloured text for people, JSON for machines, Markdown for PRs."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from typing import Any

import click

from reconciler.cli import output
from reconciler.policy import testing
from reconciler.reconcile import actions

__all__ = ["hide_scratch_approvals", "plan_json", "plan_markdown", "print_impact", "print_plan", "print_replay"]

_SYMBOLS = {
    "create": ("+", "green"),
    "deploy": ("+", "green"),
    "provision": ("+", "green"),
    "request-approval": ("?", "magenta"),
    "update": ("~", "yellow"),
    "record-replicas": ("~", "yellow"),
    "record-rollout": ("→", "cyan"),
    "transition": ("→", "cyan"),
    "record-state": ("→", "cyan"),
    "instance-state": ("→", "cyan"),
    "retire": ("-", "red"),
}


#: Under a pull-request plan made without ``--evidence``: its scratch database holds no runs.
EVIDENCE_NOTE = (
    "_Evaluation runs are recorded in the reconciler's database, not in Git: this plan's scratch database has "
    "none (pass `--evidence runs.json`, exported with `GET /v1/evaluations`), so a step shown waiting for evaluation "
    "here may already have its evidence where the merge is applied._"
)


#: Under a pull-request plan made without ``--state``: its gates ran on a scratch database.
SCRATCH_NOTE = (
    "_Gates were evaluated on a scratch database that holds no approvals: pass `--state state.json` "
    "(exported with `armctl state export`) for the real waiting gates and approval ids._"
)

_APPROVAL_ID = re.compile(r" ?\(approval \d+\)|,? ?approval \d+\b")


def hide_scratch_approvals(plan: actions.Plan) -> None:
    """Drop approval ids from a plan's conditions: on a scratch database they name scratch rows,
    which mean something else in production."""
    plan.conditions[:] = [dataclasses.replace(c, message=_APPROVAL_ID.sub("", c.message)) for c in plan.conditions]


def _changes(action: actions.Action) -> list[tuple[str, Any, Any]]:
    """An updated object's changed fields: (dotted path, before, after)."""
    changes = action.data.get("changes") if action.data else None
    return list(changes or [])


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _change_text(path: str, before: Any, after: Any) -> str:
    if isinstance(before, list) and isinstance(after, list):
        added = [x for x in after if x not in before]
        removed = [x for x in before if x not in after]
        if added or removed:
            return f"{path}: " + ", ".join([*(f"+{_short(x)}" for x in added), *(f"-{_short(x)}" for x in removed)])
    shown_before = _short(before) if before is not None else "(unset)"
    shown_after = _short(after) if after is not None else "(unset)"
    return f"{path}: {shown_before} → {shown_after}"


def _detail(action: actions.Action) -> str:
    if action.op == "update":
        changes = _changes(action)
        return "; ".join(_change_text(path, b, a) for path, b, a in changes)
    if action.op == "record-rollout" and "step" in (action.after or {}):
        b, a = action.before, action.after
        return f"canary weight {b['weight']}% → {a['weight']}% (step {a['step']}): {output.plural(a['instances'], 'instance')} on the new version"
    if action.op in ("transition", "record-state", "instance-state", "record-rollout"):
        before = action.before or {}
        after = action.after or {}
        keys = [k for k in after if before.get(k) != after.get(k) and k != "generation"]
        return ", ".join(f"{k}: {before.get(k)} → {after[k]}" if k in before else f"{k}: {after[k]}" for k in keys)
    if action.op == "deploy":
        return f"generation {action.after['generation']}: {action.before['version'] or 'none'} → {action.after['version']}, {output.plural(action.after['replicas'], 'replica')}"
    if action.op == "request-approval":
        return f"{action.after['transition']}: {action.after['required']} from {' or '.join(action.after['roles'])}"
    if action.op == "record-replicas":
        return f"replicas {action.before['replicas']} → {action.after['replicas']}"
    return ""


def plan_json(plan: actions.Plan, exit_code: int) -> dict[str, Any]:
    return {
        "revision": plan.revision,
        "sha": plan.sha,
        "author": plan.author,
        "changes": len(plan.actions),
        "exitCode": exit_code,
        "counts": plan.counts(),
        "actions": [_action_json(a) for a in plan.actions],
        "waiting": [c.as_dict() for c in plan.conditions],
        "warnings": [w.as_dict() for w in plan.warnings],
    }


def _action_json(action: actions.Action) -> dict[str, Any]:
    body = action.as_dict()
    if action.op == "update":
        body["changes"] = [{"field": path, "before": b, "after": a} for path, b, a in _changes(action)]
    return body


#: A plan that changes no object but flips decisions (a Rego change, say): it still changes things.
NO_OBJECT_CHANGES = "No object changes, but decisions change (below)."


def print_plan(plan: actions.Plan, *, decisions_change: bool = False) -> None:
    click.echo(f"Plan for {click.style(plan.revision, bold=True)} (commit by {plan.author})")
    if not plan.actions and decisions_change:
        click.echo(click.style(NO_OBJECT_CHANGES, fg="yellow"))
    elif not plan.actions:
        click.echo(click.style("No changes.", fg="green") + " The database matches the commit.")
    groups: dict[str, list[actions.Action]] = defaultdict(list)
    for action in plan.actions:
        groups[action.kind].append(action)
    for kind, items in groups.items():
        click.echo(click.style(f"\n{kind}", bold=True))
        for action in items:
            symbol, colour = _SYMBOLS.get(action.op, ("*", "white"))
            detail = _detail(action)
            line = f"  {click.style(symbol, fg=colour)} {action.name}  {click.style(action.record, fg=colour)}"
            click.echo(line + (f"  {detail}" if detail else ""))
    if plan.conditions:
        click.echo(click.style("\nWaiting or held", bold=True))
        for c in plan.conditions:
            click.echo(f"  {click.style('…', fg='yellow')} {c.kind} {c.name}: {c.message}")
    if plan.warnings:
        click.echo(click.style("\nWarnings", bold=True))
        for w in plan.warnings:
            click.echo(f"  {click.style('!', fg='yellow')} {w}")
    if plan.actions:
        summary = ", ".join(f"{n} {record}" for record, n in plan.counts().items())
        click.echo(f"\n{output.plural(len(plan.actions), 'change')}: {summary}")


def plan_markdown(
    plan: actions.Plan,
    base: str | None = None,
    tests: list[testing.TestResult] | None = None,
    *,
    evidence: bool = False,
    impact: dict[str, Any] | None = None,
    replay: dict[str, Any] | None = None,
    real_state: bool = False,
    decisions_change: bool = False,
) -> str:
    lines = [f"### ARM plan for `{plan.revision}`" + (f" against `{base}`" if base else ""), ""]
    if not plan.actions and decisions_change:
        lines.append(f"**{NO_OBJECT_CHANGES}**")
    elif not plan.actions:
        lines.append("**No changes.** The database matches the commit.")
    else:
        lines += [
            f"**{output.plural(len(plan.actions), 'change')}**",
            "",
            "| | kind | object | change | details |",
            "|---|---|---|---|---|",
        ]
        for action in plan.actions:
            symbol, _ = _SYMBOLS.get(action.op, ("*", ""))
            lines.append(f"| {symbol} | {action.kind} | `{action.name}` | `{action.record}` | {_detail(action)} |")
    if plan.conditions:
        lines += ["", "#### Waiting or held", ""]
        lines += [f"- **{c.kind} `{c.name}`**: {c.message}" for c in plan.conditions]
        if base and not evidence and any("waiting for evaluation" in c.message for c in plan.conditions):
            lines += ["", EVIDENCE_NOTE]
        if base and not real_state:
            lines += ["", SCRATCH_NOTE]
    if plan.warnings:
        lines += ["", "#### Warnings", ""]
        lines += [f"- `{w.where()}`: {w.message}" for w in plan.warnings]
    if impact is not None:
        lines += ["", *impact_markdown(impact, replay)]
    elif replay is not None:
        lines += ["", "#### Decision impact", "", *replay_markdown(replay)]
    if tests is not None:
        failed = [t for t in tests if t.outcome != "PASS"]
        lines += ["", "#### Rego unit tests", ""]
        if not failed:
            lines.append(f"All {len(tests)} passed.")
        else:
            lines.append(f"**{len(failed)} of {len(tests)} failed:**")
            lines += [
                f"- `{t.file}` `{t.package}.{t.name}`: {t.outcome}" + (f" ({t.message})" if t.message else "") for t in failed
            ]
    return "\n".join(lines) + "\n"


def print_tests(tests: list[testing.TestResult]) -> None:
    failed = [t for t in tests if t.outcome != "PASS"]
    for t in failed:
        click.secho(f"{t.outcome} {t.file} {t.package}.{t.name}" + (f": {t.message}" if t.message else ""), fg="red")
    click.echo(f"Rego unit tests: {len(tests) - len(failed)} passed, {len(failed)} failed.")


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


# ---------------------------------------------------------------- decision impact

_SHOWN_VERSIONS = 5


def _versions_text(versions: list[str]) -> str:
    shown = ", ".join(f"`{v}`" for v in versions[:_SHOWN_VERSIONS])
    more = len(versions) - _SHOWN_VERSIONS
    return shown + (f" and {more} more" if more > 0 else "")


def _example_text(example: Any) -> str:
    if not isinstance(example, dict):
        return str(example)
    if "args" in example:
        return f"`{example['version']}` in {example['environment']} with `{json.dumps(example['args'], sort_keys=True)}`"
    return f"`{example['version']}` in {example['environment']} at {example['risk']}"


def impact_markdown(impact: dict[str, Any], replay: dict[str, Any] | None = None) -> list[str]:
    """The "Decision impact" section of a PR comment."""
    lines = ["#### Decision impact", ""]
    flips = impact["flips"]
    if not flips:
        lines.append(
            f"**No decision changes.** {impact['probes']} probes over {impact['versions']} versions: every tool at every "
            "risk level decides as before."
        )
    else:
        widening = impact["widening"]
        head = f"**{sum(f['count'] for f in flips)} decisions change**"
        if widening:
            head += f", **{widening} widen** (marked ⚠)"
        lines += [head + f" over {impact['versions']} versions.", ""]
        lines += ["| | from → to | tool | scope | count | versions | example |", "|---|---|---|---|---|---|---|"]
        for f in flips:
            mark = "⚠" if f["widening"] else ""
            lines.append(
                f"| {mark} | {f['from']} → {f['to']} | `{f['tool']}` | `{f['scope']}` | {f['count']} | "
                f"{_versions_text(f['versions'])} | {_example_text(f['example'])} |"
            )
    for rule in impact.get("waitsForApproval") or ():
        roles = " or ".join(rule.get("approverRoles") or [])
        lines += [
            "",
            f"**Tenant `{rule['tenant']}` governs widening policy changes:** once merged, the apply waits for "
            f"{rule.get('requiredApprovals') or 1} approval(s) from {roles} before this change takes effect.",
        ]
    if replay is not None:
        lines += ["", *replay_markdown(replay)]
    return lines


def replay_markdown(replay: dict[str, Any]) -> list[str]:
    lines = ["##### Recorded decisions replayed", ""]
    text = f"{replay['replayed']} replayed"
    if replay["unreplayable"]:
        why = replay["unreplayableWhy"]
        text += f", {replay['unreplayable']} not replayable (" + "; ".join(f"{n}: {w}" for w, n in why.items()) + ")"
    if not replay["flips"]:
        return [*lines, text + ": none would be decided differently."]
    lines += [text + f": **{replay['changed']} would be decided differently**.", ""]
    lines += ["| | from → to | tool | count | versions | tenants | example decisions |", "|---|---|---|---|---|---|---|"]
    for f in replay["flips"]:
        mark = "⚠" if f["widening"] else ""
        lines.append(
            f"| {mark} | {f['from']} → {f['to']} | `{f['tool']}` | {f['count']} | {_versions_text(f['versions'])} | "
            f"{', '.join(f['tenants'])} | {', '.join(str(e) for e in f['examples'])} |"
        )
    return lines


def print_impact(impact: dict[str, Any]) -> None:
    click.echo(click.style("\nDecision impact", bold=True))
    if not impact["flips"]:
        click.echo(f"  No decision changes ({impact['probes']} probes over {impact['versions']} versions).")
        return
    for f in impact["flips"]:
        mark = click.style("⚠ widens ", fg="red") if f["widening"] else ""
        click.echo(
            f"  {mark}{f['from']} → {f['to']}  {f['tool']}  {f['scope']}: {f['count']} "
            f"(versions {', '.join(f['versions'][:_SHOWN_VERSIONS])}{' …' if len(f['versions']) > _SHOWN_VERSIONS else ''}; "
            f"e.g. {_example_text(f['example']).replace('`', '')})"
        )


def print_governed(impact: dict[str, Any]) -> None:
    for rule in impact.get("waitsForApproval") or ():
        roles = " or ".join(rule.get("approverRoles") or [])
        click.echo(
            f"  Tenant {rule['tenant']} governs widening policy changes: the apply waits for "
            f"{rule.get('requiredApprovals') or 1} approval(s) from {roles}."
        )


def print_replay(replay: dict[str, Any]) -> None:
    click.echo(click.style("\nRecorded decisions replayed", bold=True))
    click.echo(
        f"  {replay['replayed']} replayed, {replay['unreplayable']} not replayable, {replay['changed']} decided differently."
    )
    for reason, n in replay["unreplayableWhy"].items():
        click.echo(f"  - {n} not replayable: {reason}")
    for f in replay["flips"]:
        mark = click.style("⚠ widens ", fg="red") if f["widening"] else ""
        by_version = ", ".join(f"{v} {n}" for v, n in list(f["byVersion"].items())[:_SHOWN_VERSIONS])
        by_tenant = ", ".join(f"{t} {n}" for t, n in f["byTenant"].items())
        click.echo(
            f"  {mark}{f['from']} → {f['to']}  {f['tool']}: {f['count']} (versions: {by_version}; tenants: {by_tenant}; "
            f"e.g. decisions {', '.join(str(e) for e in f['examples'])})"
        )
