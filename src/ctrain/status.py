"""What ``ctrain status`` shows: the models behind the aliases and the recent decisions."""

from __future__ import annotations

from typing import Any

from ctrain.promotion.decisions import list_decisions
from ctrain.registry import CHALLENGER, CHAMPION, aliased_version
from ctrain.settings import Settings


def status(settings: Settings, client, limit: int = 10) -> dict[str, Any]:
    """The champion and challenger with their tags, and the ``limit`` newest decisions."""
    name = settings.model_name
    out: dict[str, Any] = {"model": name}
    for alias in (CHAMPION, CHALLENGER):
        mv = aliased_version(client, name, alias)
        out[alias] = (
            None
            if mv is None
            else {
                "version": mv.version,
                **{k: v for k, v in mv.tags.items() if not k.startswith("mlflow.")},
            }
        )
    out["decisions"] = [d.to_xcom() for d in list_decisions(client, settings, limit=limit)]
    return out


def format_status(report: dict[str, Any], metric: str) -> str:
    """``status()`` for a terminal."""
    key = f"holdout_{metric}"
    lines = []
    for alias in (CHAMPION, CHALLENGER):
        v = report[alias]
        lines.append(
            f"{alias:<10}: "
            + (
                f"version {v['version']}  {key}={v.get(key)}  window={v.get('data_window')}"
                if v
                else "none"
            )
        )
    lines.append(f"\nrecent decisions (newest first) for {report['model']}:")
    lines.append(
        f"  {'decision':<15} {'champion':<9} {'challenger':<10} {'rule':<24} trigger / reason"
    )
    for d in report["decisions"]:
        moved = f"{d['champion_before'] or '-'}->{d['champion_after'] or '-'}"
        lines.append(
            f"  {d['decision']:<15} {moved:<9} {d['challenger_version'] or '-':<10} "
            f"{d['rule']:<24} {d['trigger_reason']}: {d['reason']}"
        )
    if not report["decisions"]:
        lines.append("  (none yet)")
    return "\n".join(lines)
