"""Human-readable output with rich; works in a plain 80×24 terminal."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def settings_table(effective: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("from")
    for key, value in effective.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            rendered = "\n".join(
                ", ".join(f"{k}={v}" for k, v in item.items() if k != "source")
                + f"  [{item.get('source')}]"
                for item in value
            )
        else:
            rendered = _value(value)
        table.add_row(key, rendered, sources.get(key, "default"))
    _console().print(table)


_COLOURS = {"allow": "green", "prompt": "yellow", "forbidden": "red"}


def policy_report(report: Mapping[str, Any]) -> None:
    console = _console()
    decision = report["decision"]
    console.print(f"[bold {_COLOURS.get(decision, 'white')}]{decision}[/]  ({report['decider']})")
    console.print(f"reason: {report['reason']}", markup=False)
    rule = report.get("rule")
    if rule:
        where = rule.get("file") or rule.get("layer")
        console.print(f"rule:   {rule['action']} {rule['pattern']!r} from {where}", markup=False)
    if report.get("risk"):
        console.print(f"risk:   {report['risk']}: {report['rationale']}", markup=False)
    console.print(
        f"policy: {report['approval_policy']}   mode: {report['sandbox_mode']}", markup=False
    )
    for command in report["commands"]:
        extra = f"   (uncertain: {'; '.join(command['uncertain'])})" if command["uncertain"] else ""
        console.print(f"  - {command['command']}{extra}", markup=False)


def audit_lines(records: Iterable[Any]) -> None:
    """One line per record: time, event, decision, command."""
    import sys

    for record in records:
        fields = record.fields
        parts = [record.ts, record.event]
        for key in ("session", "approval_id", "decision", "decider", "exit_code"):
            if key in fields:
                parts.append(f"{key}={fields[key]}")
        if "command" in fields:
            parts.append(f"command={fields['command']!r}")
        if fields.get("feedback"):
            parts.append(f"feedback={fields['feedback']!r}")
        sys.stdout.write("  ".join(str(p) for p in parts) + "\n")


def approval_table(entries: Iterable[Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("id", "command", "decision", "decider", "feedback", "time"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            *(
                Text(v)
                for v in (
                    entry.approval_id,
                    entry.command,
                    entry.decision,
                    entry.decider,
                    entry.feedback or "",
                    entry.time,
                )
            )
        )
    _console().print(table)
