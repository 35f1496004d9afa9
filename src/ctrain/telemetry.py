"""The loop's figures for Prometheus, read from ctrain's records at each scrape.

Nothing here keeps a count of its own: every figure is read from the records the loop already
writes (the registry's aliases and decision records, the batch outcomes, the predictions, the
monitor's window summaries and retrain requests, the rollout's split and newest look), so a
restarted exporter says what the records say, and two exporters say the same.

``exposition(settings, client)`` is the text a scrape gets (``ctrain metrics`` prints it; the
Airflow plugin serves it at ``/ctrain/metrics``). Labels are bounded: the model, a decision
kind, an outcome, a guardrail; never a batch id, so a long-lived loop does not grow a series
per batch.
"""

from __future__ import annotations

import hmac
import os
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ctrain.settings import Settings


def _ts(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def batch_figures(settings: Settings, now: float) -> dict[str, Any]:
    """Rows and batches by outcome, the newest batch, and the batches still without
    predictions (with the age of the oldest: a stalled loop shows there first)."""
    from ctrain.ingest.batches import arrived_at, awaiting_predictions, batch_outcomes

    outcomes = sorted(batch_outcomes(settings), key=lambda o: o.validated_at)
    awaiting = awaiting_predictions(settings, outcomes)
    last = outcomes[-1] if outcomes else None
    lag = None
    if last is not None:
        scored = settings.predictions_dir / f"{last.batch_id}.parquet"
        if scored.exists():
            lag = scored.stat().st_mtime - arrived_at(settings, last)
    return {
        "batches": Counter(o.status for o in outcomes),
        "rows": {
            "accepted": sum(o.rows_accepted for o in outcomes),
            "quarantined": sum(o.rows_quarantined for o in outcomes),
        },
        "last": last,
        "last_lag": lag,
        "awaiting": len(awaiting),
        "oldest_awaiting_age": now - awaiting[0][1] if awaiting else 0.0,
    }


# name -> (kind, help). A counter is exposed with ``_total`` after its name.
FIGURES = {
    "ctrain_champion_version": ("gauge", "The version aliased champion."),
    "ctrain_champion_since_timestamp_seconds": (
        "gauge",
        "When the move to the current champion was decided.",
    ),
    "ctrain_decisions": ("counter", "Decision records, by kind."),
    "ctrain_batches": ("counter", "Landed batches, by outcome."),
    "ctrain_rows": ("counter", "Rows of landed batches, by outcome."),
    "ctrain_last_batch_rows": ("gauge", "Rows of the newest batch, by outcome."),
    "ctrain_last_batch_quarantined_ratio": ("gauge", "Share of the newest batch quarantined."),
    "ctrain_last_batch_validated_timestamp_seconds": ("gauge", "When the newest batch was judged."),
    "ctrain_last_batch_arrival_to_predictions_seconds": (
        "gauge",
        "From the newest batch landing to its predictions written.",
    ),
    "ctrain_batches_awaiting_predictions": ("gauge", "Accepted batches with no predictions yet."),
    "ctrain_oldest_awaiting_predictions_seconds": (
        "gauge",
        "Age of the oldest accepted batch with no predictions (0: none waits).",
    ),
    "ctrain_window_checked_timestamp_seconds": (
        "gauge",
        "When the monitor checked its newest window.",
    ),
    "ctrain_oldest_unchecked_window_seconds": (
        "gauge",
        "Age of the oldest scored window the monitor has not checked (0: none waits).",
    ),
    "ctrain_window_share_drifted": ("gauge", "Share of features drifted in the newest window."),
    "ctrain_window_flagged": ("gauge", "1 when the newest window is flagged."),
    "ctrain_window_estimated_metric": (
        "gauge",
        "The champion's estimated metric on the newest window (before labels).",
    ),
    "ctrain_window_measured_metric": (
        "gauge",
        "The champion's measured metric on the newest labeled window.",
    ),
    "ctrain_retrain_requests": ("counter", "Retrain requests the monitor made."),
    "ctrain_rollout_active": ("gauge", "1 while a rollout holds traffic."),
    "ctrain_rollout_challenger_percent": ("gauge", "The challenger's share of the answers."),
    "ctrain_rollout_step": ("gauge", "The rollout's current step (from 0)."),
    "ctrain_rollout_guardrail_value": ("gauge", "A guardrail's figure at the current step."),
    "ctrain_rollout_guardrail_bound": ("gauge", "The bound that guardrail is held to."),
    "ctrain_rollout_guardrail_passed": ("gauge", "1 while it holds."),
}


def figures(settings: Settings, client, now: float) -> list[tuple[str, dict[str, str], float]]:
    """Every figure as ``(name, labels, value)``, read from the records; a figure the records
    do not have yet (no champion, no window) is left out."""
    from ctrain.deadlines import unchecked_windows
    from ctrain.status import overview

    out: list[tuple[str, dict[str, str], float]] = []

    def add(name: str, value: float | None, **labels: str) -> None:
        if value is not None:
            out.append((name, labels, float(value)))

    o = overview(settings, client, limit=50_000)
    model = settings.model_name
    if champion := o["champion"]:
        moves = (d for d in o["history"] if d["moved"])
        since = next(
            (d["decided_at"] for d in moves if d["champion_after"] == champion["version"]), None
        )
        add("ctrain_champion_version", int(champion["version"]), model=model)
        add("ctrain_champion_since_timestamp_seconds", _ts(since), model=model)
    for kind, n in sorted(Counter(d["decision"] for d in o["history"]).items()):
        add("ctrain_decisions", n, model=model, decision=kind)

    b = batch_figures(settings, now)
    for status, n in sorted(b["batches"].items()):
        add("ctrain_batches", n, status=status)
    for outcome, n in b["rows"].items():
        add("ctrain_rows", n, outcome=outcome)
    if last := b["last"]:
        add("ctrain_last_batch_rows", last.rows_accepted, outcome="accepted")
        add("ctrain_last_batch_rows", last.rows_quarantined, outcome="quarantined")
        share = last.rows_quarantined / last.rows_in if last.rows_in else 1.0
        add("ctrain_last_batch_quarantined_ratio", share)
        add("ctrain_last_batch_validated_timestamp_seconds", _ts(last.validated_at))
        add("ctrain_last_batch_arrival_to_predictions_seconds", b["last_lag"])
    add("ctrain_batches_awaiting_predictions", b["awaiting"])
    add("ctrain_oldest_awaiting_predictions_seconds", b["oldest_awaiting_age"])

    unchecked = unchecked_windows(settings)
    add("ctrain_oldest_unchecked_window_seconds", now - unchecked[0][0] if unchecked else 0.0)
    if o["windows"]:
        w, metric = o["windows"][-1], o["metric"]
        add("ctrain_window_checked_timestamp_seconds", _ts(w["checked_at"]))
        add("ctrain_window_share_drifted", w["share_drifted"])
        add("ctrain_window_flagged", 1 if w["flags"] else 0)
        add("ctrain_window_estimated_metric", (w["estimate"] or {}).get("value"), metric=metric)
        measured = [x for x in o["windows"] if x["performance"].get("value") is not None]
        if measured:
            value = measured[-1]["performance"]["value"]
            add("ctrain_window_measured_metric", value, metric=metric)
    requests = sum(1 for r in o["requests"] if r.get("requested_run"))
    add("ctrain_retrain_requests", requests, model=model)

    t = o["traffic"]
    add("ctrain_rollout_active", 1 if t["active"] else 0, model=model)
    if t["active"]:
        add("ctrain_rollout_challenger_percent", t["percent"], model=model)
        add("ctrain_rollout_step", t["step"], model=model)
        for c in (t["look"] or {}).get("checks", []):
            add("ctrain_rollout_guardrail_value", c["value"], guardrail=c["name"])
            add("ctrain_rollout_guardrail_bound", c["bound"], guardrail=c["name"])
            add("ctrain_rollout_guardrail_passed", 1 if c["passed"] else 0, guardrail=c["name"])
    return out


class LoopCollector(Collector):
    """A Prometheus collector over the records of one project (read anew at each collect)."""

    def __init__(self, settings: Settings, client, now=time.time):
        self.settings, self.client, self.now = settings, client, now

    def collect(self):
        families: dict[str, Metric] = {}
        for name, labels, value in figures(self.settings, self.client, self.now()):
            if name not in families:
                kind, doc = FIGURES[name]
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                families[name] = family(name, doc, labels=list(labels))
            families[name].add_metric(list(labels.values()), value)
        yield from families.values()


def exposition(settings: Settings, client) -> bytes:
    """The Prometheus text format of the loop's figures, as a scrape gets it."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(LoopCollector(settings, client))
    return generate_latest(registry)


TOKEN_ENV, TOKEN_FILE_ENV = "CTRAIN_METRICS_TOKEN", "CTRAIN_METRICS_TOKEN_FILE"


def scrape_token(environ=os.environ) -> str | None:
    """The token a Prometheus scrape must send, from ``CTRAIN_METRICS_TOKEN`` or the file named
    by ``CTRAIN_METRICS_TOKEN_FILE`` (a mounted secret); None when neither is set."""
    if environ.get(TOKEN_FILE_ENV):
        return Path(environ[TOKEN_FILE_ENV]).read_text().strip() or None
    return environ.get(TOKEN_ENV) or None


def scrape_token_matches(authorization: str | None, environ=os.environ) -> bool:
    """Whether an ``Authorization`` header carries the scrape token (compared in constant time);
    never when no token is configured."""
    expected = scrape_token(environ)
    if not expected or not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization.removeprefix("Bearer ").encode(), expected.encode())
