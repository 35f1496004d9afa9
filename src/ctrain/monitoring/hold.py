"""Hold a batch's scoring while the monitor decides on labels that arrived with it.

Labels usually land with the next batch. When they show that the champion's metric fell past the
tolerance, scoring that batch at once spends it on a model the evidence has just condemned
(retrain-every-window would have refit first). So ``ct_batch_inference`` waits, for at most
``monitoring.hold_scoring_seconds`` from the batch's acceptance, while

- a window whose labels have matured, and on which the monitor has not decided since, shows a
  realised drop past ``performance_drop`` (a cheap look: the metric on its labeled rows against
  the scoring version's held-out figure; the monitor's own check, with its interval, decides), or
- a retrain the monitor asked for on the current champion is still queued or training (not
  while it waits for a person's approval: that may take hours).

Nothing else holds: on data whose labels do not show a drop, a batch is scored as soon as it is
accepted. The bound keeps a paused or broken monitor from holding predictions back for long.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from ctrain.ingest.batches import accepted_path
from ctrain.metrics import greater_is_better, metric_value
from ctrain.monitoring.check import labeled, scored_by
from ctrain.records import RetrainVerdict, WindowCheck
from ctrain.registry import current_champion
from ctrain.settings import Settings
from ctrain.storage import read_json, write_json_atomic

if TYPE_CHECKING:
    from ctrain.monitoring.trigger import PendingRetrain

RECENT_WINDOWS = 20  # how many of the newest scored windows a look at new labels covers


def last_verdict(settings: Settings) -> RetrainVerdict | None:
    """The monitor's latest verdict on retraining, if it has decided yet."""
    path = settings.monitor_dir / "last_verdict.json"
    return RetrainVerdict.from_xcom(read_json(path)) if path.exists() else None


def decided(settings: Settings, batch_id: str, with_labels: bool = False) -> bool:
    """Whether the monitor has checked ``batch_id`` (for the version that scored it; with
    ``with_labels``, on matured labels) and decided on retraining after that check."""
    path = settings.monitor_dir / batch_id / "summary.json"
    verdict = last_verdict(settings)
    if not path.exists() or verdict is None:
        return False
    check = WindowCheck.from_xcom(read_json(path))
    if with_labels and (
        check.performance.status != "matured"
        or check.champion_version != scored_by(settings, batch_id)
    ):
        return False
    return verdict.decided_at >= check.checked_at


def undecided_drops(settings: Settings, client) -> list[tuple[str, float]]:
    """(batch id, realised drop) of windows whose labels have matured, on which the monitor has
    not decided since, and whose metric fell past ``performance_drop`` for the version that
    scored them."""
    if not settings.predictions_dir.is_dir():
        return []
    verdict = last_verdict(settings)
    labels = list(settings.labels_dir.glob("*.parquet")) if settings.labels_dir.is_dir() else []
    newest_label = max((p.stat().st_mtime for p in labels), default=None)
    if newest_label is None or (
        verdict is not None
        and datetime.fromisoformat(verdict.decided_at).timestamp() > newest_label
    ):
        return []  # no label arrived since the monitor last decided
    metric, tolerance = settings.promotion.metric, settings.monitoring.performance_drop
    sign = 1.0 if greater_is_better(metric) else -1.0
    held_out: dict[str, float] = {}
    out = []
    # The newest windows only: the question is whether the next batch should wait, and each
    # look must stay cheap however long the history grows.
    recent = sorted(settings.predictions_dir.glob("*.parquet"), key=lambda p: p.stat().st_mtime)
    for path in sorted(recent[-RECENT_WINDOWS:]):
        batch_id = path.stem
        if decided(settings, batch_id, with_labels=True):
            continue
        preds = pd.read_parquet(
            path, columns=[settings.dataset.id_column, "model_version", "score"]
        )
        lab = labeled(settings, preds)
        if not lab.matured:
            continue
        version = str(preds["model_version"].iloc[0])
        if version not in held_out:
            tags = client.get_model_version(settings.model_name, version).tags
            held_out[version] = float(tags[f"holdout_{metric}"])
        drop = sign * (held_out[version] - metric_value(metric, lab.positive, lab.scores))
        if drop > tolerance:
            out.append((batch_id, drop))
    return out


def hold_reason(
    settings: Settings,
    client,
    batch_ids: list[str],
    monitor_busy: bool,
    now: datetime,
    pending: PendingRetrain | None = None,
) -> str | None:
    """Why scoring ``batch_ids`` should wait a little longer, or None to score them now.

    ``monitor_busy``: a ct_drift_monitor run is queued or running (between its request and the
    run it starts); ``pending``: the retrain it asked for, while its run has not ended. A
    retrain waiting for a person is not waited for: an approval may take hours.
    """
    limit = settings.monitoring.hold_scoring_seconds
    if not limit or not batch_ids:
        return None
    waited = now.timestamp() - min(accepted_path(settings, b).stat().st_mtime for b in batch_ids)
    if waited >= limit:
        return None
    budget = f"(held {waited:.0f}s of at most {limit:.0f}s)"
    drops = undecided_drops(settings, client)
    if drops:
        listed = ", ".join(f"{b} {d:+.3f}" for b, d in drops)
        return (
            f"labels just in show {settings.promotion.metric} past the "
            f"{settings.monitoring.performance_drop} tolerance ({listed}); waiting for the "
            f"monitor's verdict before scoring {', '.join(batch_ids)} {budget}"
        )
    verdict = last_verdict(settings)
    asked = pending.request if pending else verdict if monitor_busy else None
    if (
        asked is not None
        and asked.trigger
        and asked.champion_version == current_champion(client, settings.model_name)
        and not (pending and pending.stage == "waiting for approval")
    ):
        where = f" (ct_training run {pending.run_id}, {pending.stage})" if pending else ""
        return (
            f"the monitor asked for a retrain of v{asked.champion_version} "
            f"({asked.reason}){where}; waiting for its outcome before scoring "
            f"{', '.join(batch_ids)} {budget}"
        )
    return None


def _hold_path(settings: Settings, batch_id: str):
    accepted_path(settings, batch_id)  # checks the id before it becomes a path
    return settings.monitor_dir / "holds" / f"{batch_id}.json"


def record_hold(settings: Settings, batch_ids: list[str], reason: str, now: datetime) -> None:
    """Keep the first reason each batch was held for, and since when (later looks keep it)."""
    for batch_id in batch_ids:
        path = _hold_path(settings, batch_id)
        if not path.exists():
            write_json_atomic(
                path, {"batch_id": batch_id, "since": now.isoformat(), "reason": reason}
            )


def describe_hold(settings: Settings, batch_ids: list[str], now: datetime) -> str | None:
    """One line on how long ``batch_ids`` have been held and why; None if they never were."""
    paths = [_hold_path(settings, b) for b in batch_ids]
    held = [read_json(p) for p in paths if p.exists()]
    if not held:
        return None
    first = min(held, key=lambda h: h["since"])
    seconds = (now - datetime.fromisoformat(first["since"])).total_seconds()
    return f"held {seconds:.0f}s: {first['reason']}"
