"""The one writer of the traffic split (``ctrain.serving.traffic``).

``write_split`` runs under the promotion lock and is a compare-and-set on the split's
``revision``: a writer that read an older split is refused. Every change is a decision record
(``traffic``) in the decisions experiment, beside the moves of ``champion``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ctrain.promotion.decisions import record_once
from ctrain.promotion.lock import promotion_lock
from ctrain.records import DecisionKind, RunContext
from ctrain.serving.traffic import TRAFFIC_TAG, Split, now_iso, read_split
from ctrain.settings import Settings


class SplitConflict(Exception):
    """The split changed since the writer read it; nothing was written."""


def write_split(
    settings: Settings,
    client,
    new: Split,
    *,
    expected_revision: int,
    reason: str,
    ctx: RunContext,
    evidence: dict[str, Any] | None = None,
) -> Split:
    """Set the split to ``new`` (its revision becomes ``expected_revision + 1``) iff the split on
    record is still at ``expected_revision``; record the change. A retry of a write that landed
    (same rollout, same revision) only makes sure its record exists."""
    name = settings.model_name
    new = dataclasses.replace(new, revision=expected_revision + 1, since=new.since or now_iso())
    key = f"traffic/{new.rollout_id or 'none'}/r{new.revision}"
    with promotion_lock(settings):
        current = read_split(client, name)
        # This very write, landed before a crash or a lost answer (the time aside).
        landed = dataclasses.replace(current, since="") == dataclasses.replace(new, since="")
        if current.revision != expected_revision and not landed:
            raise SplitConflict(
                f"the traffic split of {name} is at revision {current.revision} "
                f"({current.describe()}), not {expected_revision}: refusing to write over it"
            )
        if landed:
            new = current
        else:
            client.set_registered_model_tag(name, TRAFFIC_TAG, new.to_json())
        champion = current.champion if current.active else new.champion
        record_once(
            client,
            settings,
            key,
            ctx,
            champion,
            {
                **(evidence or {}),
                "decision": DecisionKind.TRAFFIC,
                "rule": new.strategy,
                "reason": reason,
                "challenger_version": new.challenger,
                "split": dataclasses.asdict(new),
            },
        )
    return new
