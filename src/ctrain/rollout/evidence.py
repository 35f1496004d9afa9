"""What live traffic says about a rollout's challenger: read from the inference log.

During a rollout every row is scored by both versions (``app.py``): the one that answered it
(arm ``champion`` or ``challenger``) and the other, after the answer (arm ``shadow``). Joined on
request id and row id, that gives per row a pair of scores on the same input, and, once delayed
labels arrive (joined by row id), a paired comparison with the statistics promotion uses.

``measure`` reads every service process's landed windows of one rollout since a time;
``guardrails`` says, for a step, which checks fail (``write_look`` keeps the newest, for the
ctrain view):

- error rate: rows the challenger failed on (or could not score: it did not load);
- latency: the challenger's p99 scoring time against the champion's, on the same traffic;
- prediction drift: the change in the share of rows predicted positive between the two
  versions on the same rows (the KS distance of their scores is reported beside it: two models
  of different resolution, a stump and a forest, are far apart in KS and yet answer alike);
- labeled performance: the paired interval of the metric difference on labeled live rows.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctrain.ingest.labels import attach_labels
from ctrain.registry import CHALLENGER, CHAMPION
from ctrain.serving.log import SHADOW
from ctrain.serving.traffic import Split
from ctrain.settings import Settings
from ctrain.stats import (
    Difference,
    ks_two_sample,
    paired_bootstrap,
    shift_and_se,
    two_sample_bootstrap,
    z_value,
)
from ctrain.storage import read_json, write_json_atomic


@dataclass(frozen=True)
class Evidence:
    """The figures of one rollout over one span of time."""

    rollout_id: str
    since: str
    champion: str | None
    challenger: str | None
    answered: dict[str, int]  # rows answered per arm (champion, challenger)
    challenger_scored: int  # rows the challenger scored or was asked to, answered or in shadow
    challenger_errors: int
    error_rate: float
    champion_p99_ms: float | None
    challenger_p99_ms: float | None
    pairs: int  # rows scored by both versions
    agreement: float | None  # share of pairs with the same predicted class
    mean_abs_diff: float | None
    positive_rate: dict[str, float] | None  # share predicted positive per version, on the pairs
    prediction_shift: float | None  # challenger's positive rate minus the champion's
    prediction_shift_se: float | None  # its standard error (paired rows)
    prediction_drift: float | None  # KS distance of the two versions' scores on the pairs
    labeled_pairs: int
    paired: dict[str, float] | None  # Difference on labeled pairs (challenger vs champion)
    per_arm: dict[str, Any] | None  # ab: each arm's metric on the rows it answered, and the test

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def online_predictions(settings: Settings, since: datetime) -> pd.DataFrame:
    """Every landed online prediction answered at or after ``since`` (all service processes)."""
    folder = settings.predictions_dir
    if not folder.is_dir():
        return pd.DataFrame()
    floor = since.timestamp() - 1  # a window written by then holds nothing answered since
    files = [f for f in sorted(folder.glob("online-*.parquet")) if f.stat().st_mtime >= floor]
    frames = [pd.read_parquet(f) for f in files]
    frames = [f for f in frames if "rollout" in f.columns and len(f)]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[out["answered_at"] >= pd.Timestamp(since)]


def _p99(values: pd.Series) -> float | None:
    return float(np.percentile(values, 99)) if len(values) else None


def measure(settings: Settings, split: Split, since: datetime) -> Evidence:
    """The evidence of ``split``'s rollout from ``since`` on."""
    spec, cfg = settings.dataset, settings.promotion
    preds = online_predictions(settings, since)
    if len(preds):
        preds = preds[preds["rollout"] == split.rollout_id]
    if not len(preds):
        preds = pd.DataFrame(
            columns=[spec.id_column, "arm", "model_version", "score", "score_ms", "error"]
        ).assign(request_id=[])
    ch = str(split.challenger)
    answered = preds[preds["arm"] != SHADOW]
    shadow = preds[preds["arm"] == SHADOW]
    by_challenger = preds[preds["model_version"].astype(str) == ch]
    failed = by_challenger["error"].fillna("").astype(bool)
    scored = len(by_challenger)
    key = ["request_id", spec.id_column]
    pairs = answered.merge(shadow, on=key, suffixes=("", "_other"))
    pairs = pairs[pairs["score"].notna() & pairs["score_other"].notna()]
    is_ch = pairs["model_version"].astype(str) == ch
    s_ch = np.where(is_ch, pairs["score"], pairs["score_other"]).astype(float)
    s_cm = np.where(is_ch, pairs["score_other"], pairs["score"]).astype(float)
    n = len(pairs)
    arm_rows = answered["arm"].value_counts()
    ok = answered[answered["score"].notna()]
    times = {
        arm: _p99(ok.loc[ok["arm"] == arm, "score_ms"].astype(float))
        for arm in (CHAMPION, CHALLENGER)
    }
    if times[CHALLENGER] is None:  # shadow: the challenger's time is its shadow scoring time
        ok_shadow = shadow[shadow["score"].notna() & (shadow["model_version"].astype(str) == ch)]
        times[CHALLENGER] = _p99(ok_shadow["score_ms"].astype(float))
    paired, labeled_pairs = None, 0
    if n:
        lab = attach_labels(pairs[[spec.id_column]].astype(str), settings)
        mask = lab[spec.target].notna().to_numpy()
        labeled_pairs = int(mask.sum())
        if labeled_pairs >= settings.serving.rollout.min_labeled_rows:
            y = lab.loc[mask, spec.target].astype(type(spec.positive_class)).to_numpy()
            y = y == spec.positive_class
            if 0 < y.sum() < len(y):
                result = paired_bootstrap(
                    y,
                    s_ch[mask],
                    s_cm[mask],
                    cfg.metric,
                    cfg.n_bootstrap,
                    cfg.confidence,
                    _seed(split),
                )
                paired = dataclasses.asdict(result) | {"metric": cfg.metric}
    shift, shift_se = shift_and_se(s_ch >= 0.5, s_cm >= 0.5) if n else (None, None)
    return Evidence(
        rollout_id=split.rollout_id,
        since=since.isoformat(),
        champion=split.champion,
        challenger=split.challenger,
        answered={arm: int(arm_rows.get(arm, 0)) for arm in (CHAMPION, CHALLENGER)},
        challenger_scored=scored,
        challenger_errors=int(failed.sum()),
        error_rate=float(failed.mean()) if scored else 0.0,
        champion_p99_ms=times[CHAMPION],
        challenger_p99_ms=times[CHALLENGER],
        pairs=n,
        agreement=float(((s_ch >= 0.5) == (s_cm >= 0.5)).mean()) if n else None,
        mean_abs_diff=float(np.abs(s_ch - s_cm).mean()) if n else None,
        positive_rate={
            "champion": float((s_cm >= 0.5).mean()),
            "challenger": float((s_ch >= 0.5).mean()),
        }
        if n
        else None,
        prediction_shift=shift,
        prediction_shift_se=shift_se,
        prediction_drift=float(ks_two_sample(s_cm, s_ch)[0]) if n else None,
        labeled_pairs=labeled_pairs,
        paired=paired,
        per_arm=_per_arm(settings, split, ok) if split.strategy == "ab" else None,
    )


def _seed(split: Split) -> int:
    return zlib.crc32(split.rollout_id.encode())


def _per_arm(settings: Settings, split: Split, answered: pd.DataFrame) -> dict[str, Any]:
    """A/B: each arm's metric on the labeled rows it answered, and the two-sample interval of
    the challenger's minus the champion's."""
    spec, cfg = settings.dataset, settings.promotion
    out: dict[str, Any] = {"metric": cfg.metric}
    sides = {}
    for arm in (CHAMPION, CHALLENGER):
        rows = answered[answered["arm"] == arm]
        lab = attach_labels(rows[[spec.id_column, "score"]].astype({spec.id_column: str}), settings)
        lab = lab[lab[spec.target].notna()]
        y = lab[spec.target].astype(type(spec.positive_class)).to_numpy() == spec.positive_class
        out[f"{arm}_labeled"] = len(lab)
        sides[arm] = (y, lab["score"].to_numpy(dtype=float))
    need = settings.serving.rollout.min_labeled_rows
    if all(len(y) >= need and 0 < y.sum() < len(y) for y, _ in sides.values()):
        result: Difference = two_sample_bootstrap(
            *sides[CHALLENGER],
            *sides[CHAMPION],
            cfg.metric,
            cfg.n_bootstrap,
            cfg.confidence,
            _seed(split),
        )
        out["test"] = dataclasses.asdict(result)
    return out


@dataclass(frozen=True)
class Check:
    """One guardrail on one step. ``value`` is the figure judged against ``bound``: it passes
    at most at the bound (``at_most``), or at least at it (the labeled interval's upper end)."""

    name: str
    passed: bool
    detail: str
    value: float | None = None
    bound: float | None = None
    at_most: bool = True


LOOK_ID = re.compile(r"^v[0-9]+-[0-9a-f]{8}$")  # rollout ids as control.start makes them


def _look_path(settings: Settings, rollout_id: str) -> Path | None:
    # The id comes from the registry's traffic tag, which a person with EDIT can write: it
    # becomes a file name only in the form ctrain gives it.
    return settings.rollouts_dir / f"{rollout_id}.json" if LOOK_ID.match(rollout_id) else None


def rollout_steps(settings: Settings, split: Split) -> list[float]:
    """The challenger's share at each step of ``split``'s rollout: a canary's steps, else one."""
    if split.strategy == "canary":
        return list(settings.serving.rollout.canary_steps)
    return [split.percent]


def write_look(settings: Settings, split: Split, ev: Evidence, checks: list[Check]) -> None:
    """Keep the newest look at ``split``'s current step (its evidence and each guardrail against
    its bound), replacing the one before: what the ctrain view draws while the rollout runs."""
    path = _look_path(settings, split.rollout_id)
    if path is None:
        return
    write_json_atomic(
        path,
        {
            "rollout_id": split.rollout_id,
            "step": split.step,
            "percent": split.percent,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "steps": rollout_steps(settings, split),
            "min_rows": settings.serving.rollout.min_rows,
            "step_seconds": settings.serving.rollout.step_seconds,
            "evidence": ev.to_dict(),
            "checks": [dataclasses.asdict(c) for c in checks],
        },
    )


def read_look(settings: Settings, split: Split) -> dict[str, Any] | None:
    """The newest look at ``split``'s current step, or None (no look at this step yet)."""
    path = _look_path(settings, split.rollout_id)
    if path is None or not path.is_file():
        return None
    look = read_json(path)
    return look if look.get("step") == split.step else None


def guardrails(settings: Settings, split: Split, ev: Evidence) -> list[Check]:
    """Each guardrail on ``ev``, the evidence of ``split``'s current step: whether it passed
    and why."""
    cfg = settings.serving.rollout
    checks = [
        Check(
            "error_rate",
            ev.error_rate <= cfg.max_error_rate,
            f"{ev.challenger_errors} of {ev.challenger_scored} rows failed "
            f"({ev.error_rate:.2%}; at most {cfg.max_error_rate:.2%})",
            ev.error_rate,
            cfg.max_error_rate,
        )
    ]
    if ev.champion_p99_ms is not None and ev.challenger_p99_ms is not None:
        bound = max(
            cfg.latency_ratio * ev.champion_p99_ms, ev.champion_p99_ms + cfg.latency_slack_ms
        )
        checks.append(
            Check(
                "latency",
                ev.challenger_p99_ms <= bound,
                f"p99 scoring time {ev.challenger_p99_ms:.2f} ms against the champion's "
                f"{ev.champion_p99_ms:.2f} ms (at most {bound:.2f} ms)",
                ev.challenger_p99_ms,
                bound,
            )
        )
    if ev.prediction_shift is not None:
        rates = ev.positive_rate or {}
        expected = split.expected_shift or 0.0
        off = ev.prediction_shift - expected
        # Both shifts are measured on samples: fail only when the whole interval of the
        # difference lies past the tolerance, as promotion needs its whole interval above 0.
        margin = z_value(settings.promotion.confidence) * math.hypot(
            ev.prediction_shift_se or 0.0, split.expected_shift_se
        )
        checks.append(
            Check(
                "prediction_drift",
                abs(off) - margin <= cfg.max_prediction_shift,
                f"predicted positive on {ev.pairs} live rows: challenger "
                f"{rates['challenger']:.1%}, champion {rates['champion']:.1%}, a shift of "
                f"{ev.prediction_shift:+.1%} against {expected:+.1%} expected "
                f"({split.expected_from or 'no expectation'}): off by {abs(off):.1%} "
                f"± {margin:.1%} at {settings.promotion.confidence:.0%} (at most "
                f"{cfg.max_prediction_shift:.0%}); agreement {ev.agreement:.1%}, KS of the "
                f"scores {ev.prediction_drift:.3f}",
                abs(off) - margin,
                cfg.max_prediction_shift,
            )
        )
    if ev.paired is not None:
        p = ev.paired
        checks.append(
            Check(
                "labeled_performance",
                p["ci_high"] >= -cfg.worse_tolerance,
                f"{p['metric']} challenger {p['challenger']:.4f} vs champion {p['champion']:.4f} "
                f"on {ev.labeled_pairs} labeled live rows: {p['diff']:+.4f} "
                f"[{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]",
                p["ci_high"],
                -cfg.worse_tolerance,
                at_most=False,
            )
        )
    return checks
