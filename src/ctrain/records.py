"""The typed records that flow between the loop's steps.

Each is a frozen dataclass: the verb modules take and return them, so an editor can follow the
data from one step to the next. ``to_xcom()`` gives a small JSON-able dict (ids, URIs, counts,
metrics: never data) and ``from_xcom()`` rebuilds the record from it; ``ctrain.steps`` is the one
place that converts. Records that are also written to disk (an ingest outcome, a dataset's
``meta.json``, a window's ``summary.json``) use the same dict there.

Glossary (one meaning per name):

- **batch**: one landed file, once ingested (``batch_id``); the inference log's windows land
  as batches too (``online-...``).
- **window_batches**: a count, how many of the newest accepted batches a training uses (0: all):
  ``training.window_batches``, ``monitoring.retrain_window_batches``, the trigger form's and the
  monitor's ``window_batches``, ``RunContext.window_batches``.
- **training window** (``DatasetWindow``): the rows a version was trained and held out on,
  addressed by their content hash; ``span`` says in one line for people what they cover (the
  version's ``data_window`` tag).
- **monitored window** (``WindowCheck``): one batch as the monitor checks it, for the version
  that scored it.
- **log window**: what ``ctrain serve``'s inference log lands at a time (``serving/log.py``).
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime
from enum import Enum, StrEnum
from functools import cache
from typing import Any, Self


class DecisionKind(StrEnum):
    """What a decision record says happened to ``champion``."""

    PROMOTED = "promoted"  # the pipeline's comparison moved it
    MANUAL_PROMOTE = "manual_promote"  # a person moved it (``ctrain promote``)
    ROLLBACK = "rollback"  # moved back to an earlier version
    EXTERNAL = "external"  # found moved outside ctrain (in MLflow directly), recorded as found
    REJECTED = "rejected"  # the challenger lost, a refusal, or a stale comparison: nothing moved
    DRY_RUN = "dry_run"  # what would have happened, recorded; nothing moved
    PENDING = "pending"  # a record opened and not yet closed
    INTERRUPTED = "interrupted"  # its process died before the move; nothing moved
    SKIPPED = "skipped"  # no new version: the window and config are those of an existing one
    EXPIRED = "expired"  # a promotion waited for approval and no one answered in time
    ROLLOUT = "rollout"  # a winning challenger handed to a rollout (shadow, canary, ab)
    TRAFFIC = "traffic"  # the traffic split of a rollout changed; champion did not move
    PROPOSED = "proposed"  # offered to another environment, which pulled it; nothing moved here
    CONFIGURED = "configured"  # the configuration restricted training uses changed; nothing moved


MOVES_CHAMPION = frozenset(
    {
        DecisionKind.PROMOTED,
        DecisionKind.MANUAL_PROMOTE,
        DecisionKind.ROLLBACK,
        DecisionKind.EXTERNAL,
    }
)


@cache
def _tuple_fields(cls: type) -> frozenset[str]:
    hints = typing.get_type_hints(cls)
    return frozenset(
        f.name for f in dataclasses.fields(cls) if typing.get_origin(hints[f.name]) is tuple
    )


def _plain(value: Any) -> Any:
    """What JSON holds: a list for a tuple, the value of an enum (a DecisionKind is a str, but
    an XCom or a log should show "promoted", not the enum)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Enum):
        return value.value
    return value


class Record:
    """``to_xcom``/``from_xcom`` for a frozen dataclass of JSON-able fields."""

    def to_xcom(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: _plain(v) for k, v in out.items()}

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> Self:
        """The record from ``data``; keys it does not know (older or richer dicts) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        tuples = _tuple_fields(cls)
        kwargs = {k: tuple(v) if k in tuples else v for k, v in data.items() if k in names}
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class RunContext(Record):
    """Where a step was asked to run from (the Airflow run, or the CLI), and why.

    Carried into MLflow tags and decision records.
    """

    dag_id: str = "cli"
    run_id: str = ""
    trigger_reason: str = "manual"
    dry_run: bool = False
    force: bool = False
    evidence_uri: str = ""
    window_batches: int | None = None  # most recent accepted batches to train on; None: settings'
    since_batch: str = ""  # train from this batch on (where the monitor saw the change begin)
    started_by: str = ""  # who or what asked: a user name, "schedule", "ct_drift_monitor", ...
    requested_by: str = ""  # the person who started it (an Airflow user, a CLI user), if one did

    def __post_init__(self) -> None:
        if not self.run_id:
            object.__setattr__(
                self, "run_id", f"cli__{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
            )


@dataclasses.dataclass(frozen=True)
class IngestOutcome(Record):
    """What ingest did with one landed file (a batch or a label file); kept in ``outcomes/``."""

    batch_id: str
    source_file: str
    sha256: str
    validated_at: str
    status: str  # accepted | partial | quarantined | deferred (changed while read: left, not kept)
    reason: str
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    accepted_uri: str | None
    quarantine_uri: str | None
    warnings: tuple[str, ...] = ()
    failed_checks: tuple[dict[str, Any], ...] = ()
    columns_dropped: int = 0  # undeclared columns left out of the accepted file
    config_hash: str = ""  # the validation config it was judged under; a replay needs the same
    reference: str = ""  # the learned reference it was judged under: a version, or "bootstrap"


@dataclasses.dataclass(frozen=True)
class DatasetWindow(Record):
    """The training window: train and held-out files, addressed by the content hash of the rows."""

    content_hash: str
    train_uri: str
    holdout_uri: str
    rows_train: int
    rows_holdout: int
    rows_unlabeled: int
    batches: tuple[str, ...]  # in arrival order
    window_start: str
    window_end: str
    holdout_start: str
    span: str  # one line for people: the time span, the number of batches, and why those
    rows_superseded: int = 0  # rows whose id came again in a later batch (the latest arrival wins)
    since_batch: str | None = None  # trained from this batch on (a detected change), if asked
    topped_up: tuple[str, ...] = ()  # batches from before the change added to reach the minimum

    @property
    def dataset_id(self) -> str:
        return self.content_hash

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> Self:
        # A meta.json written before the span had its own name called it "window".
        if "span" not in data and "window" in data:
            data = {**data, "span": data["window"]}
        return super().from_xcom(data)


@dataclasses.dataclass(frozen=True)
class ValidatedSet(Record):
    """The training set passed its checks (a failure raises instead); the version carries this."""

    dataset_id: str
    validation_status: str
    report_uri: str


@dataclasses.dataclass(frozen=True)
class TrainedRun(Record):
    """The MLflow run that holds the best candidate's model."""

    mlflow_run_id: str
    experiment_id: str
    model_uri: str
    estimator: str
    cv_score: float


@dataclasses.dataclass(frozen=True)
class Evaluation(Record):
    """The trained model on the held-out slice, logged into its training run."""

    mlflow_run_id: str
    experiment_id: str
    metric: str
    holdout_value: float  # the promotion metric on the held-out rows
    holdout_rows: int
    figures: dict[str, float]  # mlflow.models.evaluate's headline metrics


@dataclasses.dataclass(frozen=True)
class RegisteredVersion(Record):
    """A version of the registered model, aliased ``challenger``."""

    model_name: str
    version: str
    model_uri: str


@dataclasses.dataclass(frozen=True)
class Comparison(Record):
    """Challenger against champion on the same held-out rows, and the action the rules propose.

    The full evidence (floors, slices) is in the file at ``comparison_uri``.
    """

    model_name: str
    challenger_version: str
    champion_seen: str | None
    action: str  # promote | reject
    rule: str
    reason: str
    metric: str
    challenger_metric: float
    champion_metric: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    n_resamples: int
    holdout_rows: int
    dataset_id: str
    comparison_uri: str
    # When the monitor condemned the champion on the windows some held-out rows come from, the
    # figures above are on those rows, and ``all_rows`` holds them on every held-out row.
    condemned_windows: tuple[str, ...] = ()
    condemned_rows: int = 0
    all_rows: dict[str, float] | None = None


@dataclasses.dataclass(frozen=True)
class ApprovalAnswer(Record):
    """A person's answer to an approval request (Airflow's human-in-the-loop task)."""

    outcome: str  # approved | rejected | expired
    approver: str | None  # None when no one answered
    comment: str = ""
    answered_at: str | None = None


@dataclasses.dataclass(frozen=True)
class Decision(Record):
    """One decision record: what happened to ``champion``, why, and on whose request.

    The MLflow run ``record_run_id`` holds it, with ``decision.json`` and ``model_card.md``.
    """

    decision: str  # a DecisionKind
    rule: str
    reason: str
    model_name: str
    challenger_version: str | None
    champion_before: str | None
    champion_after: str | None
    record_run_id: str
    decided_at: str = ""
    trigger_reason: str = ""
    airflow_dag_id: str = ""
    airflow_run_id: str = ""
    metric: str | None = None
    challenger_metric: float | None = None
    champion_metric: float | None = None
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    move: int | None = None  # the move's place in the champion's history (1, 2, ...), if it moved
    replayed: bool = False  # a retry that found this record already finished
    started_by: str | None = None  # who asked: a person (UI, CLI, approver) or the DAG that did
    trigger_evidence: str | None = None  # the monitor's retrain request, as an MLflow artifact URI
    comparison_uri: str | None = None  # the full comparison (floors, slices), an artifact URI
    headline: str = ""  # the decision in one line: run name, DAG run note, log line
    approver: str | None = None  # who approved or rejected it, when approval is required
    approval_comment: str | None = None

    @property
    def moved(self) -> bool:
        """Whether this decision moved ``champion`` (a real change of the serving model)."""
        return self.decision in MOVES_CHAMPION


@dataclasses.dataclass(frozen=True)
class ScoredBatch(Record):
    """One accepted batch scored by the champion of the moment."""

    batch_id: str
    model_version: str
    rows: int
    predictions_uri: str


@dataclasses.dataclass(frozen=True)
class Performance(Record):
    """The champion's metric on one window's labeled rows, once enough labels have arrived."""

    metric: str
    rows: int
    labeled_rows: int
    labeled_share: float
    champion_value: float  # the champion's figure on its own held-out rows
    required_share: float
    status: str  # no_labels | immature | matured
    value: float | None = None
    drop: float | None = None  # positive = worse than the champion's held-out figure
    degraded: bool = False
    # The drop's interval at monitoring.decisive_confidence; decisive: all of it is past the
    # tolerance, so this window alone is evidence enough to retrain.
    drop_low: float | None = None
    drop_high: float | None = None
    decisive: bool = False


@dataclasses.dataclass(frozen=True)
class Estimate(Record):
    """The champion's metric on one window estimated from its scores alone, before labels (CBPE).

    ``harmful``: the whole interval of the estimated drop is past the tolerance, so the window
    alone asks for a retrain; ``harmless``: all of it is within the tolerance, so the window's data
    drift does not count towards one.
    """

    metric: str
    value: float
    low: float
    high: float
    drop: float
    drop_low: float
    drop_high: float
    harmful: bool
    harmless: bool


@dataclasses.dataclass(frozen=True)
class WindowCheck(Record):
    """The monitor's verdict on one window (a scored batch).

    The full evidence (per-column statistics, prediction drift) is the document at
    ``summary_uri``, which holds these fields too; Evidently's HTML is at ``report_uri``.
    """

    batch_id: str
    checked_at: str
    window_end: str
    champion_version: str
    rows: int
    share_drifted: float
    dataset_drift: bool
    drifted_columns: tuple[str, ...]
    prediction_drift: float  # the statistic of the champion's scores against its held-out scores
    performance: Performance
    flags: tuple[str, ...]  # data_drift, performance
    # Share of the window's rows outside the champion's learned reference, and on which columns.
    outside_reference: float = 0.0
    outside_columns: tuple[str, ...] = ()
    # The share of the champion's feature importance on the drifted columns; severe: at least
    # monitoring.severe_drift_importance, and the estimate does not call the shift harmless.
    drift_severity: float = 0.0
    severe_drift: bool = False
    estimate: Estimate | None = None
    summary_uri: str = ""
    report_uri: str | None = None
    mlflow_run_id: str | None = None
    # Set when this is champion_version rescored on a window another version served: that
    # version (the window's drift figures are then not about this champion, and left out).
    rescored_from: str | None = None

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    def to_xcom(self) -> dict[str, Any]:
        return super().to_xcom() | {"flagged": self.flagged}

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> Self:
        perf, est = data["performance"], data.get("estimate")
        return super().from_xcom(
            data
            | {
                "performance": perf if isinstance(perf, Performance) else Performance(**perf),
                "estimate": Estimate(**est) if isinstance(est, dict) else est,
            }
        )


@dataclasses.dataclass(frozen=True)
class RetrainVerdict(Record):
    """The monitor's answer to "retrain now?", with the reason either way."""

    trigger: bool
    champion_version: str | None
    windows: tuple[str, ...]  # the recent windows judged
    flagged_windows: tuple[str, ...]
    reason: str
    suppressed_by: str | None
    decided_at: str
    key: str = ""  # the monitor run that decided; a request is logged once per key
    evidence_uri: str | None = None  # the request's evidence (an MLflow artifact), when it triggers
    evidence_run_id: str | None = None  # the monitoring experiment's run that holds it
    window_batches: int = 0  # the retrain trains on this many recent batches (0 = all)
    change_from: str = ""  # the first flagged window: the retrain's data starts there
    requested_run: str = ""  # the ct_training run a request starts (its run id, chosen first)
    pending_run: str = ""  # held back while this requested ct_training run has not ended
