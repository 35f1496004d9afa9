"""One typed settings object: the project YAML, overridden by ``CTRAIN_*`` environment variables.

Nothing happens at import: no folder is created and no tracking URI is set. ``load_settings()``
reads the YAML named by ``CTRAIN_PROJECT`` (or the packaged demo project) and returns a frozen
``Settings``; the paths it derives are computed, never created, until a verb writes there.
Nested values can be set from the environment with ``__``, e.g. ``CTRAIN_PROMOTION__MODE=dry_run``.
"""

from __future__ import annotations

import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Severity = Literal["block", "warn"]
# The metrics a promotion is decided on (ctrain.metrics computes each, with its direction).
Metric = Literal["roc_auc", "average_precision", "accuracy", "f1", "log_loss"]
# scikit-learn scorer names a grid search can rank binary classifiers by.
Scorer = Literal[
    "roc_auc",
    "average_precision",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "precision",
    "recall",
    "neg_log_loss",
]
# Environment variables of ctrain that are not settings fields.
_NOT_SETTINGS = {
    "CTRAIN_PROJECT",
    "CTRAIN_DEBUG",
    "CTRAIN_METRICS_TOKEN",
    "CTRAIN_METRICS_TOKEN_FILE",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One input column of the model."""

    name: str
    type: Literal["numeric", "categorical"]
    nullable: bool = False


# The expectation types of Great Expectations 1.x (the version in requirements.lock), so a
# misspelt type fails when the settings load rather than mid-ingest; tests/unit/test_settings.py
# holds this list equal to what great_expectations provides.
GX_EXPECTATION_TYPES = frozenset(
    {
        "expect_column_distinct_values_to_be_in_set",
        "expect_column_distinct_values_to_contain_set",
        "expect_column_distinct_values_to_equal_set",
        "expect_column_kl_divergence_to_be_less_than",
        "expect_column_max_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_median_to_be_between",
        "expect_column_min_to_be_between",
        "expect_column_most_common_value_to_be_in_set",
        "expect_column_pair_values_a_to_be_greater_than_b",
        "expect_column_pair_values_to_be_equal",
        "expect_column_pair_values_to_be_in_set",
        "expect_column_proportion_of_non_null_values_to_be_between",
        "expect_column_proportion_of_unique_values_to_be_between",
        "expect_column_quantile_values_to_be_between",
        "expect_column_stdev_to_be_between",
        "expect_column_sum_to_be_between",
        "expect_column_to_exist",
        "expect_column_type_to_be",
        "expect_column_unique_value_count_to_be_between",
        "expect_column_value_lengths_to_be_between",
        "expect_column_value_lengths_to_equal",
        "expect_column_value_z_scores_to_be_less_than",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_dateutil_parseable",
        "expect_column_values_to_be_decreasing",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_increasing",
        "expect_column_values_to_be_json_parseable",
        "expect_column_values_to_be_null",
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_be_unique",
        "expect_column_values_to_match_json_schema",
        "expect_column_values_to_match_like_pattern",
        "expect_column_values_to_match_like_pattern_list",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_match_regex_list",
        "expect_column_values_to_match_strftime_format",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_not_be_outliers",
        "expect_column_values_to_not_match_like_pattern",
        "expect_column_values_to_not_match_like_pattern_list",
        "expect_column_values_to_not_match_regex",
        "expect_column_values_to_not_match_regex_list",
        "expect_compound_columns_to_be_unique",
        "expect_multicolumn_sum_to_equal",
        "expect_multicolumn_values_to_be_equal",
        "expect_query_results_to_match_comparison",
        "expect_select_column_values_to_be_unique_within_record",
        "expect_table_column_count_to_be_between",
        "expect_table_column_count_to_equal",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_columns_to_match_set",
        "expect_table_row_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_table_row_count_to_equal_other_table",
        "unexpected_rows_expectation",
    }
)


class ExpectationSpec(_Strict):
    """A user expectation: a Great Expectations 1.x expectation type and its arguments."""

    type: str = Field(
        description="snake_case GX expectation type, e.g. expect_column_values_to_be_between"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Severity = "block"

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in GX_EXPECTATION_TYPES:
            raise ValueError(f"{v!r} is not a Great Expectations expectation type")
        return v


class DatasetConfig(_Strict):
    """Where batches land and what a batch looks like."""

    landing_dir: Path | None = None
    labels: Literal["inline", "delayed"] = Field(
        "inline",
        description="inline: batches carry the target; delayed: label files arrive later in labels_landing_dir",
    )
    labels_landing_dir: Path | None = None
    label_time_column: str = "label_time"
    target: str = "label"
    classes: list[int | str] = Field(default_factory=lambda: [0, 1])
    positive_class: int | str = 1
    id_column: str = "row_id"
    event_time_column: str = "event_time"
    features: list[FeatureSpec]
    expectations: list[ExpectationSpec] = Field(default_factory=list)
    reference_file: Path | None = Field(
        default=None,
        description="File whose ranges and category sets define valid values; "
        "when unset, the first batch that passes the schema checks defines them.",
    )

    @model_validator(mode="after")
    def _classes(self) -> DatasetConfig:
        if len(set(map(str, self.classes))) != len(self.classes) or len(self.classes) != 2:
            raise ValueError(f"classes must be two distinct labels, not {self.classes}")
        if self.positive_class not in self.classes:
            raise ValueError(
                f"positive_class {self.positive_class!r} is not one of classes {self.classes}"
            )
        return self

    @field_validator("features")
    @classmethod
    def _unique_features(cls, v: list[FeatureSpec]) -> list[FeatureSpec]:
        names = [f.name for f in v]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names repeat: {names}")
        if not names:
            raise ValueError("at least one feature is required")
        return v

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.type == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.type == "categorical"]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


# Checks against what ctrain learned from data (ranges, category sets), not what a person said:
# they warn by default (the rows are scored, flagged and counted as drift evidence), because a
# learned range is only as wide as the data it was learned from.
LEARNED_CHECKS = frozenset({"range", "category"})


class ValidationConfig(_Strict):
    """How batches are judged."""

    min_rows: int = 50
    range_margin: float = Field(
        0.5, ge=0, description="learned ranges widen by this share of their span"
    )
    severity: dict[str, Severity] = Field(
        default_factory=dict,
        description="per built-in check (schema, not_null, unique_id, range, category, target, "
        "row_count, type, finite, future, label_conflict) severity override; the checks on learned references "
        "(range, category) warn by default, every other check blocks",
    )
    row_split_max_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="if more than this share of rows fail, the whole batch is quarantined",
    )
    undeclared_columns: Literal["drop", "quarantine"] = Field(
        "drop",
        description="columns a batch has beyond the id, time, target and features: dropped from "
        "the accepted file and counted (the original stays in processed/), or the whole batch "
        "quarantined",
    )
    future_tolerance_hours: float = Field(
        24.0, ge=0, description="a row whose event time is later than now plus this fails"
    )

    def severity_of(self, check: str) -> Severity:
        """The severity of built-in ``check``: the project's override, else its default."""
        return self.severity.get(check, "warn" if check in LEARNED_CHECKS else "block")


# The estimators a candidate may name: scikit-learn classifiers with predict_proba whose fitted
# types ctrain's model loader trusts (ctrain.registry.TRUSTED_TYPES is derived from these).
# An import path from the project file is never imported unless it is on this list.
ALLOWED_ESTIMATORS = frozenset(
    {
        "sklearn.linear_model.LogisticRegression",
        "sklearn.ensemble.HistGradientBoostingClassifier",
        "sklearn.ensemble.RandomForestClassifier",
        "sklearn.ensemble.ExtraTreesClassifier",
        "sklearn.ensemble.GradientBoostingClassifier",
        "sklearn.tree.DecisionTreeClassifier",
        "sklearn.naive_bayes.GaussianNB",
    }
)


class CandidateSpec(_Strict):
    """A candidate estimator and its small hyperparameter grid."""

    name: str
    estimator: str = Field(description="import path, e.g. sklearn.linear_model.LogisticRegression")
    params: dict[str, Any] = Field(default_factory=dict, description="fixed constructor arguments")
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _allowed(cls, v: str) -> str:
        if v not in ALLOWED_ESTIMATORS:
            raise ValueError(
                f"{v!r} is not an estimator ctrain trains; choose one of {sorted(ALLOWED_ESTIMATORS)}"
            )
        return v


class TrainingConfig(_Strict):
    window_batches: int = Field(0, ge=0, description="most recent accepted batches; 0 means all")
    holdout_fraction: float = Field(0.25, gt=0, lt=1)
    min_train_rows: int = 200
    seed: int = 42
    cv_folds: int = Field(3, ge=2)
    metric: Scorer = "roc_auc"
    candidates: list[CandidateSpec] = Field(min_length=1)
    tuning: Literal["open", "restricted"] = Field(
        "open",
        description="open: grid-search the candidates; restricted: train only the configuration "
        "promoted into this environment (ctrain env promote-config), on its own data",
    )


class PredeploymentConfig(_Strict):
    """The load test a version passes before it may become champion where it runs
    (``promotion.predeployment``): the version alone in a scratch ``ctrain serve``, Locust
    sending the environment's own held-out rows, each figure held to its budget."""

    environments: tuple[Literal["dev", "staging", "prod"], ...] = Field(
        ("staging", "prod"),
        description="where a version is load-tested before it may become champion; []: nowhere "
        "(a project without environments is not load-tested)",
    )
    users: int = Field(4, ge=1, description="concurrent callers, each with no think time")
    seconds: float = Field(10.0, gt=0, description="how long the load lasts")
    rows_per_request: int = Field(1, ge=1)
    max_p50_ms: float = Field(25.0, gt=0, description="median latency per request, at most")
    max_p99_ms: float = Field(150.0, gt=0, description="99th percentile latency, at most")
    min_rows_per_second: float = Field(50.0, ge=0, description="rows scored per second, at least")
    max_peak_memory_mb: float = Field(
        1500.0, gt=0, description="the scratch service's peak resident memory, at most"
    )
    max_artifact_mb: float = Field(50.0, gt=0, description="the model's files, at most")
    max_error_rate: float = Field(
        0.0, ge=0, le=1, description="share of requests that failed, at most"
    )
    start_timeout_seconds: float = Field(
        120.0, gt=0, description="the scratch service must be ready within this"
    )


class PromotionConfig(_Strict):
    mode: Literal["enabled", "dry_run"] = "enabled"
    metric: Metric = "roc_auc"
    min_improvement: float = Field(0.0, ge=0)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    n_bootstrap: int = Field(1000, ge=100)
    floors: dict[Metric, float] = Field(default_factory=lambda: {"roc_auc": 0.6})
    slice_columns: list[str] = Field(default_factory=list)
    slice_tolerance: float = Field(0.05, ge=0)
    slice_min_rows: int = Field(50, ge=1)
    non_inferiority_margin: float = Field(
        0.02,
        ge=0,
        description="a challenger wins when it is not worse than the champion by more than this "
        "(the paired interval's lower end above -margin) where being significantly better is not "
        "asked: when the monitor holds decisive evidence against the champion on the windows "
        "held-out rows come from (the comparison is then made on those rows), and on the "
        "monitor's planned follow-up after a change. 0: significantly better, always",
    )
    lock_timeout_s: float = Field(60.0, gt=0)
    approval: Literal["auto", "required"] = Field(
        "auto",
        description="required: ct_training waits for a person (Airflow's Required Actions) "
        "before a challenger that won its comparison is promoted",
    )
    approval_timeout_minutes: float = Field(
        1440, gt=0, description="an approval unanswered this long expires: nothing is promoted"
    )
    predeployment: PredeploymentConfig = PredeploymentConfig()


class DriftMethod(_Strict):
    """A drift test and its threshold, named as in Evidently's ``DataDriftPreset``.

    Distances (``wasserstein`` normed by the reference std, ``jensenshannon``, ``psi``) flag drift when
    the statistic is >= threshold; tests when the p-value is below it (``ks``: <=, as in Evidently).
    """

    method: Literal["wasserstein", "ks", "psi", "jensenshannon", "chisquare"]
    threshold: float = Field(gt=0)


class MonitoringConfig(_Strict):
    """What ct_drift_monitor measures and when it asks for retraining."""

    numeric: DriftMethod = DriftMethod(method="wasserstein", threshold=0.1)
    categorical: DriftMethod = DriftMethod(method="jensenshannon", threshold=0.1)
    prediction: DriftMethod = DriftMethod(method="wasserstein", threshold=0.1)
    drift_share: float = Field(
        0.3, gt=0, le=1, description="share of drifted features that counts as data drift"
    )
    min_rows: int = Field(200, ge=1, description="a window with fewer rows is not judged")
    outside_reference_share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="share of a window's rows outside the champion's learned reference (its "
        "training window's ranges and category sets) that counts as data drift",
    )
    performance_drop: float = Field(
        0.05, gt=0, description="absolute drop of the metric below the champion's held-out figure"
    )
    decisive_confidence: float = Field(
        0.99,
        gt=0.5,
        lt=1,
        description="a window whose performance drop has its whole interval at this confidence "
        "past performance_drop (the window's and the champion's held-out rows both resampled) "
        "asks for a retrain alone, without waiting for debounce_k windows",
    )
    n_bootstrap: int = Field(1000, ge=100, description="resamples behind each drop's interval")
    severe_drift_importance: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a window whose drifted columns carry at least this share of the champion's "
        "permutation importance drifted severely: it asks for a retrain alone, unless the "
        "performance estimate calls the shift harmless",
    )
    settle_batches: int = Field(
        3,
        ge=0,
        description="after a retrain that started at a change, once this many labeled batches "
        "have come from the change on, a champion that learned from fewer is retrained once on "
        "all of them (the first retrain had to act on one batch); 0 = never",
    )
    estimate_performance: bool = Field(
        True,
        description="estimate the champion's metric on each window from its scores before labels "
        "arrive (CBPE); an estimated drop past performance_drop at decisive_confidence asks for a "
        "retrain, and drift the estimate calls harmless does not count towards one",
    )
    hold_scoring_seconds: float = Field(
        300.0,
        ge=0,
        description="ct_batch_inference holds a batch for at most this long (from its "
        "acceptance) while labels just in show the champion's metric past performance_drop and "
        "the monitor has not decided, or while a retrain the monitor asked for is queued or "
        "training (not while it waits for approval): the batch is then scored by the "
        "retrain's outcome; 0 = score at once",
    )
    label_maturity: float = Field(
        0.8, gt=0, le=1, description="share of a window's rows that must have labels"
    )
    debounce_k: int = Field(2, ge=1)
    debounce_n: int = Field(3, ge=1)
    cooldown_windows: int = Field(
        1,
        ge=0,
        description="after a request, the next one on the same champion waits until this many "
        "windows newer than those it was asked on have been checked (requests that did not "
        "replace the champion also back off: _backing_off). Counted in windows, so it means "
        "the same at a batch a minute or a batch a day; a decisive drop significantly worse "
        "than the one the last request answered asks at once",
    )
    cooldown_minutes: float = Field(
        0.0,
        ge=0,
        description="an extra wall-clock floor between two requests; 0 = none (windows, not "
        "minutes, pace the requests: cooldown_windows)",
    )
    report_sample_rows: int = Field(
        20_000, ge=100, description="rows per side in the Evidently HTML report"
    )
    retrain_window_batches: int = Field(
        2,
        ge=0,
        description="a retrain the monitor asks for trains on this many recent batches (0 = all): "
        "after drift the newest regime must be in the training data, not only in the held-out "
        "slice; rows still waiting for labels are left out",
    )
    html_reports: bool = Field(
        True, description="keep Evidently's HTML report of every checked window"
    )


def _none_if_off(value):
    """A setting that may be switched off: "", none, off or null (any case) mean None."""
    return None if str(value).strip().lower() in ("", "none", "off", "null") else value


class SchedulesConfig(_Strict):
    """When each DAG runs on its own (cron, UTC); new data and the monitor start runs too."""

    ingest: str = Field("*/15 * * * *", description="ct_ingest looks at the landing folders")
    training: str | None = Field(
        "0 3 * * *",
        description="ct_training retrains on the window; none: only new data, the monitor and "
        "people start it",
    )
    monitoring: str = Field("0 * * * *", description="ct_drift_monitor checks due windows")
    deadlines: str | None = Field(
        "*/5 * * * *",
        description="ct_deadlines looks for missed deadlines (alerts) and moves of champion no "
        "one was told of; none: not on its own",
    )
    watch_seconds: float = Field(
        2.0,
        ge=0,
        description="Airflow's triggerer looks at the landing folders this often and starts "
        "ct_ingest when something lands (the ingest cron stays as a safety net); 0: the cron only",
    )

    _off = field_validator("training", "deadlines", mode="before")(_none_if_off)


class RolloutConfig(_Strict):
    """How a challenger that won its comparison reaches traffic (``ct_rollout``).

    ``direct`` moves champion at once (the comparison's promotion). ``shadow`` has the
    challenger score every request beside the champion, which alone answers; ``canary`` gives it
    a growing share of traffic, step by step, each step judged against guardrails; ``ab`` gives it
    a fixed share and decides on the outcomes of each arm. In every strategy but ``direct``, every
    row is scored by both versions (the one that does not answer scores after the answer is sent),
    so the comparison is paired, on the same live rows.
    """

    strategy: Literal["direct", "shadow", "canary", "ab"] = Field(
        "direct", description="direct | shadow | canary | ab"
    )
    canary_steps: tuple[float, ...] = Field(
        (5.0, 25.0, 50.0, 100.0),
        description="canary: the challenger's share of traffic (percent) at each step",
    )
    ab_percent: float = Field(50.0, gt=0, lt=100, description="ab: the challenger's share")
    step_seconds: float = Field(
        300.0, ge=0, description="a step (shadow, canary, ab: the one step) lasts at least this"
    )
    min_rows: int = Field(
        200, ge=1, description="rows the challenger must score in a step before it is judged"
    )
    step_timeout_seconds: float = Field(
        3600.0,
        gt=0,
        description="a step that has not seen min_rows by then rolls back: no evidence, no move",
    )
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="guardrail: share of the challenger's rows it failed on"
    )
    latency_ratio: float = Field(
        2.0, ge=1, description="guardrail: challenger's p99 scoring time over the champion's"
    )
    latency_slack_ms: float = Field(
        5.0, ge=0, description="... a p99 within this many ms of the champion's always passes"
    )
    max_prediction_shift: float = Field(
        0.1,
        gt=0,
        le=1,
        description="guardrail: prediction drift against the champion, as the change in the "
        "share of rows predicted positive when the challenger scores the same rows (what "
        "callers would see change), held to the change its comparison showed on its held-out "
        "rows (a retrain after a change is meant to answer differently); the KS distance of "
        "the scores is reported beside it",
    )
    min_labeled_rows: int = Field(
        200, ge=10, description="labeled live rows before the labeled comparison counts"
    )
    worse_tolerance: float = Field(
        0.0,
        ge=0,
        description="guardrail: on labeled live rows, the challenger fails when the upper end "
        "of the paired interval of its metric difference is below -worse_tolerance",
    )

    @field_validator("canary_steps")
    @classmethod
    def _steps(cls, steps):
        if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError("canary_steps: increasing percentages in (0, 100]")
        if steps[-1] != 100:
            raise ValueError("canary_steps: the last step is 100 (the whole of the traffic)")
        return steps


class ServingConfig(_Strict):
    """``ctrain serve``: the online service that scores rows with ``@champion``."""

    host: str = Field(
        "127.0.0.1",
        description="address to bind; anything but loopback needs the token (token_env set)",
    )
    port: int = Field(8000, ge=1, le=65535)
    token_env: str = Field(
        "CTRAIN_SERVE_TOKEN",
        description="environment variable holding the bearer token callers must send; when it "
        "is set, every route but /health and /ready needs it",
    )
    reload_seconds: float = Field(
        2.0, gt=0, description="how often the service looks where @champion points"
    )
    max_rows: int = Field(1000, ge=1, description="rows per request, at most")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="request body size, at most")
    max_in_flight: int = Field(
        64,
        ge=1,
        description="requests in progress at once (a request counts once its body has arrived); "
        "past it the service answers 503 with Retry-After instead of queueing without bound",
    )
    read_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="a request's head (line and headers), and then its body, must each arrive "
        "whole within this; a slower one gets 408 (a caller that stalls holds its connection, "
        "never a place among the requests in progress)",
    )
    max_head_bytes: int = Field(
        65536, ge=4096, description="a request's line and headers, at most (400 past it)"
    )
    max_queue_ms: float = Field(
        50.0,
        gt=0,
        description="when requests wait longer than this before they are handled (the event "
        "loop's lag), new ones get 503 with Retry-After: under overload the service answers "
        "the requests it keeps in time instead of answering all of them late",
    )
    log_window_rows: int = Field(
        1000,
        ge=1,
        description="the inference log lands a window (a batch in the landing folder, its "
        "predictions beside it) after this many rows",
    )
    log_window_seconds: float = Field(
        300.0, gt=0, description="... or when its oldest row is this old"
    )
    rollout: RolloutConfig = RolloutConfig()


EventKind = Literal[
    "champion_changed",
    "rollout",
    "retrain_requested",
    "quarantine",
    "approval_waiting",
    "approval_expired",
    "task_failed",
    "predictions_late",
    "training_late",
    "monitor_silent",
    "approval_expiring",
]
CONN_ID = r"^[A-Za-z0-9_.-]{1,250}$"


class NotificationsConfig(_Strict):
    """Who is told what (``ctrain.notify``): each kind of event goes to the Airflow connections
    (Apprise: Slack, Teams, email, webhooks… by URL) its route names; a kind with no route is
    not sent. Off by default (no routes)."""

    routes: dict[EventKind, tuple[Annotated[str, Field(pattern=CONN_ID)], ...]] = Field(
        default_factory=dict,
        description="event kind -> Airflow connection ids of type apprise",
    )
    quarantine_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="a batch is announced when more than this share of its rows is quarantined "
        "(a whole batch quarantined always is)",
    )
    airflow_url: str = Field(
        "http://127.0.0.1:8080",
        description="Airflow's address as people reach it, for the links in messages",
    )


class AlertsConfig(_Strict):
    """The deadlines the loop is held to; each one missed is told once (``notifications.routes``
    of its kind). ``ct_training``'s is an Airflow Deadline Alert on its runs; the others are
    ctrain's own look at its records (``ct_deadlines``, ``ctrain.deadlines``)."""

    arrival_to_predictions_minutes: float = Field(
        15,
        gt=0,
        description="predictions_late: an accepted batch has no predictions this long after it "
        "landed",
    )
    training_run_minutes: float | None = Field(
        120,
        gt=0,
        description="training_late: a ct_training run is still going this long after it was "
        "queued (the approval's timeout is added where promotion.approval is required); read "
        "when the DAG is parsed; none: no deadline",
    )
    monitor_silent_hours: float = Field(
        6,
        gt=0,
        description="monitor_silent: scored windows have waited this long for ct_drift_monitor "
        "to check them",
    )
    approval_expiry_warning_minutes: float = Field(
        30,
        gt=0,
        description="approval_expiring: an approval request expires within this (a request "
        "with a shorter timeout is warned about at the first look)",
    )

    _off = field_validator("training_run_minutes", mode="before")(_none_if_off)


EnvironmentName = Literal["dev", "staging", "prod"]


class EnvironmentConfig(_Strict):
    """Where one environment keeps its models and data (``environments``). Credentials are
    never here: MLflow's own ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` (or a secret file
    mounted for them) in the process that reaches it."""

    tracking_uri: str = Field(description="its MLflow tracking server (or store)")
    model_name: str | None = Field(None, description="its registered model; default: model_name")
    home: Path | None = Field(None, description="its data home, where it is reachable from here")


class DemoConfig(_Strict):
    seed: int = 7
    batch_rows: int = 1500
    positive_rate: float = Field(0.2, gt=0, lt=1)
    covariate_shift_from: int | None = None
    covariate_shift: float = 1.5
    concept_drift_from: int | None = None


class Settings(BaseSettings):
    """Everything ctrain needs, from the project YAML and ``CTRAIN_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="CTRAIN_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    home: Path = Path(".ctrain")
    model_name: str = "ctrain-demo"
    experiment: str = "ctrain-training"
    decisions_experiment: str = "ctrain-decisions"
    monitoring_experiment: str = "ctrain-monitoring"
    tracking_uri: str | None = None
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000", description="where the Airflow links send people to MLflow's UI"
    )
    train_on_new_data: bool = Field(
        True,
        description="new accepted data starts ct_training; set false when the monitor decides "
        "(the schedule and the monitor's requests still start it)",
    )
    lock_url: str | None = Field(
        default=None, description="postgresql://... for an advisory lock; a file lock when unset"
    )
    dags_folder: Path | None = None
    environment: EnvironmentName | None = Field(
        None, description="which environment this is (CTRAIN_ENVIRONMENT); none: the only one"
    )
    environments: dict[EnvironmentName, EnvironmentConfig] = Field(
        default_factory=dict,
        description="each environment's MLflow, model and data home: a version moves between "
        "them by promotion, pulled by the target (ctrain env promote)",
    )
    dataset: DatasetConfig
    validation: ValidationConfig = ValidationConfig()
    training: TrainingConfig
    promotion: PromotionConfig = PromotionConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    serving: ServingConfig = ServingConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    alerts: AlertsConfig = AlertsConfig()
    demo: DemoConfig = DemoConfig()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, **_unused):
        # The YAML arrives as init kwargs; the environment must win over it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _columns_are_declared(self) -> Settings:
        # Errors of a whole-object check have no location of their own: each message starts
        # with the key it is about, which `_explain` turns into the place to change.
        spec = self.dataset
        unknown = [c for c in self.promotion.slice_columns if c not in spec.categorical]
        if unknown:
            raise ValueError(
                f"promotion.slice_columns: {unknown} are not categorical features of "
                f"dataset.features (those are {spec.categorical}); name some of them, or write "
                "slice_columns: [] for no per-slice check"
            )
        columns = {spec.id_column, spec.event_time_column, spec.target, *spec.feature_names}
        for i, exp in enumerate(spec.expectations):
            named = [exp.kwargs.get(k) for k in ("column", "column_A", "column_B")]
            named += list(exp.kwargs.get("column_list") or [])
            missing = [c for c in named if c is not None and c not in columns]
            if missing:
                raise ValueError(
                    f"dataset.expectations.{i}: {exp.type} names {missing}, which is not a "
                    "column of dataset (features, target, id or event time); fix the column "
                    "or remove the expectation"
                )
        if self.environment and self.environments and self.environment not in self.environments:
            raise ValueError(
                f"environment: {self.environment!r} is not one of environments "
                f"({', '.join(self.environments)}); name it there, or set the one this is"
            )
        own = self.environments.get(self.environment) if self.environment else None
        if own and self.tracking_uri and own.tracking_uri != self.tracking_uri:
            raise ValueError(
                f"tracking_uri: {self.tracking_uri} is not environments.{self.environment}."
                f"tracking_uri ({own.tracking_uri}); set one of them"
            )
        return self

    def of(self, environment: str) -> Settings:
        """These settings as seen in ``environment``: its MLflow, model and data home.

        Raises:
            ValueError: ``environment`` is not in ``environments``.
        """
        env = self.environments.get(environment)  # type: ignore[call-overload]
        if env is None:
            known = ", ".join(self.environments) or "none"
            raise ValueError(f"unknown environment {environment!r} (environments: {known})")
        update: dict[str, Any] = {"environment": environment, "tracking_uri": env.tracking_uri}
        if env.model_name:
            update["model_name"] = env.model_name
        if env.home:
            update["home"] = env.home
        return self.model_copy(update=update)

    # Derived paths: computed, never created here; never cached (a copy with another home must
    # not keep the first one's paths).
    @property
    def root(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def landing_dir(self) -> Path:
        return (self.dataset.landing_dir or self.root / "landing").expanduser().resolve()

    @property
    def labels_landing_dir(self) -> Path:
        return (
            (self.dataset.labels_landing_dir or self.root / "labels_landing").expanduser().resolve()
        )

    @property
    def labels_dir(self) -> Path:
        """Accepted label files."""
        return self.root / "labels"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def monitor_dir(self) -> Path:
        return self.root / "monitor"

    @property
    def processed_dir(self) -> Path:
        """Where an input file goes once its outcome is written (never deleted)."""
        return self.root / "processed"

    @property
    def accepted_dir(self) -> Path:
        return self.root / "accepted"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def outcomes_dir(self) -> Path:
        return self.root / "outcomes"

    @property
    def rollouts_dir(self) -> Path:
        """The newest look at each rollout's current step (``rollout/evidence.write_look``)."""
        return self.root / "rollouts"

    @property
    def notifications_dir(self) -> Path:
        """What was told to whom (``ctrain.notify``), and the requests waiting for a person."""
        return self.root / "notifications"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def profile_path(self) -> Path:
        return self.root / "reference" / "profile.json"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def resolved_dags_folder(self) -> Path:
        return (self.dags_folder or project_root() / "dags").resolve()


def project_root() -> Path:
    """The checkout this package was installed from (editable install)."""
    return Path(__file__).resolve().parents[2]


def default_project_file() -> Path:
    return Path(str(resources.files("ctrain") / "project.yaml"))


def load_settings(project_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the project YAML (``CTRAIN_PROJECT`` or the packaged demo) into ``Settings``.

    ``CTRAIN_*`` variables that name no setting are reported (logged as a warning), not ignored.

    Raises:
        ValueError: the file is missing or is not a mapping, or a value is wrong; one line per
            wrong value, naming where it came from (the file and key, or the variable).
    """
    path = Path(project_file or os.environ.get("CTRAIN_PROJECT") or default_project_file())
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ValueError(f"cannot read project file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"project file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"project file {path} must hold a mapping, not {type(data).__name__}")
    data.update(overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ValueError(_explain(exc, path)) from None
    for name in unknown_environment(settings):
        logging.getLogger(__name__).warning(
            "%s is set but names no ctrain setting; it is ignored", name
        )
    if settings.environment in settings.environments:
        settings = settings.of(settings.environment)  # its own MLflow, model and home
    return settings


def _explain(exc: ValidationError, path: Path) -> str:
    """One line per error, each naming its source: the environment variable or the file key."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        msg = err["msg"]
        keyed = re.match(r"Value error, ([a-z_]+(?:\.[a-z_0-9]+)+): (.*)", msg, re.DOTALL)
        if not loc and keyed:  # a whole-object check that names its key
            loc, msg = keyed.group(1).split("."), keyed.group(2)
        # Errors of a whole section (a model validator) point at the section.
        var = "CTRAIN_" + "__".join(part.upper() for part in loc[:2] if not part.isdigit())
        where = (
            f"environment variable {var}"
            if loc and var in os.environ
            else f"project file {path}, key {'.'.join(loc) or '(top level)'}"
        )
        lines.append(f"{where}: {msg}")
    return "invalid settings: " + "; ".join(lines)


def unknown_environment(settings: Settings | None = None) -> list[str]:
    """``CTRAIN_*`` environment variables that name no setting (a typo, a removed setting).

    A variable a setting names (``serving.token_env``: the service's token) is read by the code
    that uses it, so it is not unknown.
    """
    named = {settings.serving.token_env} if settings is not None else set()
    out = []
    for name in sorted(os.environ):
        if not name.startswith("CTRAIN_") or name in _NOT_SETTINGS | named:
            continue
        model: Any = Settings
        for part in name.removeprefix("CTRAIN_").lower().split("__"):
            fields = getattr(model, "model_fields", None)
            if fields is None or part not in fields:
                out.append(name)
                break
            model = fields[part].annotation
    return out
