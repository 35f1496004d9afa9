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


def _gauge(name: str, doc: str, value: float | None, labels: dict[str, str]) -> Metric | None:
    if value is None:
        return None
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    g.add_metric(list(labels.values()), float(value))
    return g


def batch_figures(settings: Settings, now: float) -> dict[str, Any]:
    """Rows and batches by outcome, the newest batch, and the batches still without
    predictions (with the age of the oldest: a stalled loop shows there first)."""
    from ctrain.ingest.batches import batch_outcomes
    from ctrain.ingest.route import kept_name

    def landed(o) -> Path:  # the input as it landed, kept with its time of writing
        return settings.processed_dir / kept_name(Path(o.source_file), o.batch_id)

    outcomes = sorted(batch_outcomes(settings), key=lambda o: o.validated_at)
    awaiting = []
    for o in outcomes:
        if o.rows_accepted and not (settings.predictions_dir / f"{o.batch_id}.parquet").exists():
            kept = landed(o)
            awaiting.append(kept.stat().st_mtime if kept.exists() else _ts(o.validated_at))
    last = outcomes[-1] if outcomes else None
    lag = None
    if last is not None:
        kept, scored = landed(last), settings.predictions_dir / f"{last.batch_id}.parquet"
        if kept.exists() and scored.exists():
            lag = scored.stat().st_mtime - kept.stat().st_mtime
    return {
        "batches": Counter(o.status for o in outcomes),
        "rows": {
            "accepted": sum(o.rows_accepted for o in outcomes),
            "quarantined": sum(o.rows_quarantined for o in outcomes),
        },
        "last": last,
        "last_lag": lag,
        "awaiting": len(awaiting),
        "oldest_awaiting_age": now - min(awaiting) if awaiting else 0.0,
    }


class LoopCollector(Collector):
    """A Prometheus collector over the records of one project (read anew at each collect)."""

    def __init__(self, settings: Settings, client, now=time.time):
        self.settings, self.client, self.now = settings, client, now

    def collect(self):
        from ctrain.status import overview

        s, now = self.settings, self.now()
        o = overview(s, self.client, limit=50_000)
        model = {"model": s.model_name}
        champion = o["champion"]
        out: list[Metric | None] = []
        if champion:
            since = next(
                (
                    d["decided_at"]
                    for d in o["history"]
                    if d["moved"] and d["champion_after"] == champion["version"]
                ),
                None,
            )
            out += [
                _gauge(
                    "ctrain_champion_version",
                    "The version aliased champion.",
                    int(champion["version"]),
                    model,
                ),
                _gauge(
                    "ctrain_champion_since_timestamp_seconds",
                    "When the move to the current champion was decided.",
                    _ts(since),
                    model,
                ),
            ]
        decisions = CounterMetricFamily(
            "ctrain_decisions", "Decision records, by kind.", labels=["model", "decision"]
        )
        for kind, n in sorted(Counter(d["decision"] for d in o["history"]).items()):
            decisions.add_metric([s.model_name, kind], n)
        out.append(decisions)

        b = batch_figures(s, now)
        batches = CounterMetricFamily(
            "ctrain_batches", "Landed batches, by outcome.", labels=["status"]
        )
        for status, n in sorted(b["batches"].items()):
            batches.add_metric([status], n)
        rows = CounterMetricFamily(
            "ctrain_rows", "Rows of landed batches, by outcome.", labels=["outcome"]
        )
        for outcome, n in b["rows"].items():
            rows.add_metric([outcome], n)
        out += [batches, rows]
        if b["last"] is not None:
            last = b["last"]
            out += [
                _gauge(
                    "ctrain_last_batch_rows",
                    "Rows of the newest batch, by outcome.",
                    last.rows_accepted,
                    {"outcome": "accepted"},
                ),
                _gauge(
                    "ctrain_last_batch_rows", "", last.rows_quarantined, {"outcome": "quarantined"}
                ),
                _gauge(
                    "ctrain_last_batch_quarantined_ratio",
                    "Share of the newest batch's rows quarantined.",
                    last.rows_quarantined / last.rows_in if last.rows_in else 1.0,
                    {},
                ),
                _gauge(
                    "ctrain_last_batch_validated_timestamp_seconds",
                    "When the newest batch was judged.",
                    _ts(last.validated_at),
                    {},
                ),
                _gauge(
                    "ctrain_last_batch_arrival_to_predictions_seconds",
                    "From the newest batch landing to its predictions written.",
                    b["last_lag"],
                    {},
                ),
            ]
        out += [
            _gauge(
                "ctrain_batches_awaiting_predictions",
                "Accepted batches with no predictions yet.",
                b["awaiting"],
                {},
            ),
            _gauge(
                "ctrain_oldest_awaiting_predictions_seconds",
                "Age of the oldest accepted batch with no predictions (0: none waits).",
                b["oldest_awaiting_age"],
                {},
            ),
        ]

        if o["windows"]:
            w = o["windows"][-1]
            metric = {"metric": o["metric"]}
            out += [
                _gauge(
                    "ctrain_window_checked_timestamp_seconds",
                    "When the monitor checked its newest window.",
                    _ts(w["checked_at"]),
                    {},
                ),
                _gauge(
                    "ctrain_window_share_drifted",
                    "Share of features drifted in the newest window.",
                    w["share_drifted"],
                    {},
                ),
                _gauge(
                    "ctrain_window_flagged",
                    "1 when the newest window is flagged.",
                    1 if w["flags"] else 0,
                    {},
                ),
                _gauge(
                    "ctrain_window_estimated_metric",
                    "The champion's estimated metric on the newest window (before labels).",
                    (w["estimate"] or {}).get("value"),
                    metric,
                ),
            ]
            measured = [x for x in o["windows"] if x["performance"].get("value") is not None]
            if measured:
                out.append(
                    _gauge(
                        "ctrain_window_measured_metric",
                        "The champion's measured metric on the newest labeled window.",
                        measured[-1]["performance"]["value"],
                        metric,
                    )
                )
        requests = CounterMetricFamily(
            "ctrain_retrain_requests", "Retrain requests the monitor made.", labels=["model"]
        )
        requests.add_metric([s.model_name], sum(1 for r in o["requests"] if r.get("requested_run")))
        out.append(requests)

        t = o["traffic"]
        out.append(
            _gauge(
                "ctrain_rollout_active",
                "1 while a rollout holds traffic.",
                1 if t["active"] else 0,
                model,
            )
        )
        if t["active"]:
            out += [
                _gauge(
                    "ctrain_rollout_challenger_percent",
                    "The challenger's share of the answers.",
                    t["percent"],
                    model,
                ),
                _gauge(
                    "ctrain_rollout_step", "The rollout's current step (from 0).", t["step"], model
                ),
            ]
            for c in (t["look"] or {}).get("checks", []):
                g = {"guardrail": c["name"]}
                out += [
                    _gauge(
                        "ctrain_rollout_guardrail_value",
                        "A guardrail's figure at the current step.",
                        c["value"],
                        g,
                    ),
                    _gauge(
                        "ctrain_rollout_guardrail_bound",
                        "The bound that guardrail is held to.",
                        c["bound"],
                        g,
                    ),
                    _gauge(
                        "ctrain_rollout_guardrail_passed",
                        "1 while it holds.",
                        1 if c["passed"] else 0,
                        g,
                    ),
                ]
        yield from _merged(out)


def _merged(families: list[Metric | None]):
    """One family per name: the same gauge with several label sets is one family."""
    by: dict[str, Metric] = {}
    for f in families:
        if f is None:
            continue
        if f.name in by:
            by[f.name].samples += f.samples
        else:
            by[f.name] = f
    yield from by.values()


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
