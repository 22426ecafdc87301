"""How a plan looks: grouped, coloured text for people, JSON for machines, Markdown for PRs."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import click

from reconciler.cli import output
from reconciler.policy import testing
from reconciler.reconcile import actions

__all__ = ["plan_json", "plan_markdown", "print_plan"]

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


def _detail(action: actions.Action) -> str:
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
        "actions": [a.as_dict() for a in plan.actions],
        "waiting": [c.as_dict() for c in plan.conditions],
        "warnings": [w.as_dict() for w in plan.warnings],
    }


def print_plan(plan: actions.Plan) -> None:
    click.echo(f"Plan for {click.style(plan.revision, bold=True)} (commit by {plan.author})")
    if not plan.actions:
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
    plan: actions.Plan, base: str | None = None, tests: list[testing.TestResult] | None = None, *, evidence: bool = False
) -> str:
    lines = [f"### ARM plan for `{plan.revision}`" + (f" against `{base}`" if base else ""), ""]
    if not plan.actions:
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
    if plan.warnings:
        lines += ["", "#### Warnings", ""]
        lines += [f"- `{w.where()}`: {w.message}" for w in plan.warnings]
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
