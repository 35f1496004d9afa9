"""Decide whether to retrain, with hygiene: debounce, cooldown, one request at a time.

A window is flagged when its data drifted (share of drifted features past ``drift_share``, on at
least ``min_rows`` rows) or its matured performance dropped past ``performance_drop``. Retraining is
requested when ``debounce_k`` of the last ``debounce_n`` windows checked under the current champion
are flagged, unless the last request is younger than the cooldown, a request already covered these
windows, or ct_training is queued or running. Every request is logged with its evidence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ctrain.settings import Settings
from ctrain.storage import read_json, write_json_atomic


def _log_path(settings: Settings):
    return settings.monitor_dir / "triggers.json"


def trigger_log(settings: Settings) -> list[dict[str, Any]]:
    path = _log_path(settings)
    return read_json(path) if path.exists() else []


def _reason(drift: list[dict[str, Any]], n: int, perf: list[dict[str, Any]], m: int) -> str:
    parts = []
    if drift:
        cols = sorted({c for w in drift for c in w["data_drift"]["drifted_columns"]})
        share = max(w["data_drift"]["share_drifted"] for w in drift)
        parts.append(
            f"data drift in {len(drift)} of the last {n} windows "
            f"(up to {share:.0%} of features; drifted: {', '.join(cols)})"
        )
    if perf:
        worst = max(perf, key=lambda w: w["performance"]["drop"])["performance"]
        parts.append(
            f"performance drop in {len(perf)} of the last {m} label-matured windows "
            f"({worst['metric']} {worst['value']:.4f} vs champion {worst['champion_value']:.4f} "
            f"on {worst['labeled_rows']} labeled rows)"
        )
    return "; ".join(parts)


def decide_retrain(
    settings: Settings,
    summaries: list[dict[str, Any]],
    champion_version: str,
    now: datetime,
    training_active: bool,
) -> dict[str, Any]:
    """The verdict on the recent windows: ``trigger`` true with a reason, or why not.

    Each signal is debounced over its own windows: data drift over the last ``debounce_n``
    windows, performance over the last ``debounce_n`` windows whose labels have matured (labels
    arrive late, so those are older windows).
    """
    cfg = settings.monitoring
    k, n = cfg.debounce_k, cfg.debounce_n
    mine = [s for s in summaries if s["champion_version"] == champion_version]
    recent = mine[-n:]
    matured = [s for s in mine if s["performance"].get("status") == "matured"][-n:]
    drift = [s for s in recent if "data_drift" in s["flags"]]
    perf = [s for s in matured if s["performance"].get("degraded")]
    flagged = sorted({s["batch_id"] for s in [*drift, *perf]})
    verdict: dict[str, Any] = {
        "trigger": False,
        "champion_version": champion_version,
        "windows": [s["batch_id"] for s in recent],
        "flagged_windows": flagged,
        "reason": "",
        "suppressed_by": None,
        "decided_at": now.isoformat(),
    }
    drift_fires, perf_fires = len(drift) >= k, len(perf) >= k
    if not (drift_fires or perf_fires):
        verdict["reason"] = (
            f"data drift in {len(drift)} of the last {len(recent)} windows, performance drop in "
            f"{len(perf)} of the last {len(matured)} label-matured windows; {k} needed"
        )
        return verdict
    verdict["reason"] = _reason(
        drift if drift_fires else [], len(recent), perf if perf_fires else [], len(matured)
    )
    log = trigger_log(settings)
    last = log[-1] if log else None
    if training_active:
        verdict["suppressed_by"] = "ct_training is queued or running"
    elif last and now - datetime.fromisoformat(last["decided_at"]) < timedelta(
        minutes=cfg.cooldown_minutes
    ):
        verdict["suppressed_by"] = (
            f"cooldown: last request at {last['decided_at']} (cooldown {cfg.cooldown_minutes} min)"
        )
    elif (
        last
        and last["champion_version"] == champion_version
        and set(flagged) <= set(last["flagged_windows"])
    ):
        verdict["suppressed_by"] = "already requested for these windows"
    else:
        verdict["trigger"] = True
    return verdict


def record_request(
    settings: Settings, verdict: dict[str, Any], key: str, summaries: list[dict[str, Any]]
) -> dict[str, Any]:
    """Log a retrain request once per ``key`` (a retry returns the first), with its evidence file."""
    log = trigger_log(settings)
    for entry in log:
        if entry["key"] == key:
            return entry
    evidence = [s for s in summaries if s["batch_id"] in verdict["flagged_windows"]]
    safe_key = key.replace("/", "_").replace(":", "_")
    path = write_json_atomic(
        settings.monitor_dir / "requests" / f"{safe_key}.json", {**verdict, "evidence": evidence}
    )
    entry = {**verdict, "key": key, "evidence_uri": str(path)}
    write_json_atomic(_log_path(settings), [*log, entry])
    return entry


def now_utc() -> datetime:
    return datetime.now(UTC)
