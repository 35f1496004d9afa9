"""The traffic split of a rollout as the service reads it: which version answers which rows.

The split is a tag of the registered model (``ctrain.traffic``, a small JSON document), so
every serving replica reads it in the same call that reads the aliases, a restarted service
finds it where it was, and only a principal with EDIT on the model can change it (the serving
user has READ). The service only reads it; its one writer is the rollout
(``ctrain.rollout.split``).

Which rows the challenger answers is sticky: a row goes to the challenger when a hash of the
rollout id and the row's id falls under the challenger's share, so the same id gets the same
arm for the whole rollout, and a row that went to the challenger at 5 % still does at 25 %.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

TRAFFIC_TAG = "ctrain.traffic"
RUNNING = "running"
BUCKETS = 10_000


@dataclass(frozen=True)
class Split:
    """Who answers what. ``status`` is ``running`` while a rollout holds traffic; anything else
    (``promoted``, ``rolled_back``, ``rejected``, ``aborted``, or "" for never) means the
    champion answers everything."""

    rollout_id: str = ""
    strategy: str = "direct"
    champion: str | None = None  # champion when the rollout began: what a promotion replaces
    challenger: str | None = None
    percent: float = 0.0  # the challenger's share of the answers
    step: int = 0
    revision: int = 0
    since: str = ""  # when this step began (ISO, UTC)
    started: str = ""  # when the rollout began
    status: str = ""
    note: str = ""  # why it has this status (a failed guardrail, an abort, the outcome)
    # The challenger's share predicted positive minus the champion's on the challenger's
    # held-out rows (None: no such rows could be scored), and where that figure comes from:
    # the live shift is judged against what the offline comparison already showed.
    expected_shift: float | None = None
    expected_shift_se: float = 0.0  # its standard error (the held-out rows are a sample too)
    expected_from: str = ""

    @property
    def active(self) -> bool:
        return self.status == RUNNING and bool(self.challenger)

    def answers(self, row_id: str) -> bool:
        """Whether the challenger answers the row with this id (sticky for the rollout)."""
        if not self.active or self.percent <= 0:
            return False
        bucket = zlib.crc32(f"{self.rollout_id}:{row_id}".encode()) % BUCKETS
        return bucket < self.percent * BUCKETS / 100

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Split:
        if not text:
            return cls()
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        if not self.active:
            return f"no rollout ({self.status or 'never'}): champion answers everything"
        share = f"{self.percent:g} % answered by v{self.challenger}"
        if self.strategy == "shadow":
            share = f"v{self.challenger} scores every row in the shadow"
        return f"{self.strategy} {self.rollout_id}, step {self.step}: {share} (champion {self.champion})"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def read_split(client, name: str) -> Split:
    """The split on record for model ``name`` (an empty, inactive one when there is none)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return Split()
    return Split.from_json(model.tags.get(TRAFFIC_TAG))
