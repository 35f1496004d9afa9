"""Drift statistics: does the current window still look like the reference?

``detect_drift`` is the decision path. It computes, column by column, the statistic Evidently
0.7's ``DataDriftPreset`` computes for the same method, on all rows (no sampling), about 35 times
faster and in a fifteenth of the memory at 1,000,000 rows a side x 20 columns (the figures:
``docs/benchmarks.md``, measured by ``bench/drift.py``). The shared statistics (sorted merges,
KS) live in ``ctrain.stats``. Column by column:

- ``wasserstein``: first Wasserstein distance divided by the reference's population std (floored
  at 0.001), from the two sorted samples merged once: the integral of |F_ref - F_cur| over the
  merged support, with the CDF gap kept as an integer count so it is exact.
- ``ks``: the two-sided Kolmogorov-Smirnov p-value, scipy's ``ks_2samp(method="auto")``: the same
  statistic from the same merged CDFs and scipy's own p-value (the exact distribution while
  neither side has more than 10,000 values, ``kstwo.sf`` above).
- ``jensenshannon`` and ``psi``: Evidently's binning (one bin per category, or per value of a
  numeric column with at most 20 distinct reference values; else Sturges bins over both samples),
  then ``scipy.spatial.distance.jensenshannon`` (natural log, a distance, not the divergence) or
  ``sum((p - q) * ln(p / q))`` after Evidently's zero filling.
- ``chisquare``: ``scipy.stats.chisquare`` of current counts against reference frequencies scaled
  to the current size; the p-value.

Distances flag drift when the statistic is >= the threshold; ``chisquare`` when the p-value is
< the threshold and ``ks`` when it is <= (Evidently's own comparisons). ``statistic`` is
Evidently's drift score: the p-value for the two tests.

Missing values: NaN, None and +-inf are dropped column by column (Evidently does the same) and
counted in ``ColumnDrift.missing_reference`` / ``missing_current``; a column left with no value
on either side is an error.

``evidently_report`` runs Evidently itself with the same settings, for the HTML report and as a
cross-check; Evidently is imported only there (importing it takes seconds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from ctrain.settings import DriftMethod
from ctrain.stats import Workspace, finite_sorted, ks_sorted, merged_cdf_gap

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

NUMERIC = "numeric"
CATEGORICAL = "categorical"
# The column types Evidently registers each method for.
METHODS_BY_KIND = {
    NUMERIC: frozenset({"wasserstein", "ks", "jensenshannon", "psi"}),
    CATEGORICAL: frozenset({"jensenshannon", "psi", "chisquare"}),
}
# Evidently bins a numeric column by value when its reference has at most this many values.
_MAX_VALUE_BINS = 20
_EVIDENTLY_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_EVIDENTLY_DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"


@dataclass(frozen=True)
class ColumnDrift:
    """The verdict on one column.

    ``statistic`` is the distance (``wasserstein``, ``jensenshannon``, ``psi``) or the p-value
    (``ks``, ``chisquare``); ``missing_*`` count the NaN/None/inf values dropped before the test.
    """

    column: str
    kind: str
    method: str
    statistic: float
    threshold: float
    drifted: bool
    missing_reference: int = 0
    missing_current: int = 0


@dataclass(frozen=True)
class DriftResult:
    """The verdicts on all columns and on the dataset."""

    columns: list[ColumnDrift]
    share_drifted: float
    dataset_drift: bool
    rows_reference: int
    rows_current: int

    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns, in the order they were checked."""
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; a non-finite statistic becomes None."""
        out = asdict(self)
        for col in out["columns"]:
            col["statistic"] = col["statistic"] if math.isfinite(col["statistic"]) else None
        out["drifted_columns"] = self.drifted_columns()
        return out


def is_drifted(method: str, statistic: float, threshold: float) -> bool:
    """Evidently's verdict for one statistic (its ``ks`` uses <=, its ``chisquare`` <)."""
    if method == "ks":
        return statistic <= threshold
    if method == "chisquare":
        return statistic < threshold
    return statistic >= threshold


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    numeric_method: DriftMethod,
    categorical_method: DriftMethod,
    drift_share: float,
) -> DriftResult:
    """Decide, column by column and for the dataset, whether ``current`` drifted from ``reference``.

    Exact on all rows (no sampling); see the module docstring for each method.

    Raises:
        ValueError: a method does not fit its column type, a column is missing or not numeric, a
            frame is empty or a column has no value left once NaN/inf are dropped; the message
            names the column.
    """
    _check_inputs(
        reference, current, numeric, categorical, numeric_method, categorical_method, drift_share
    )
    columns: list[ColumnDrift] = []
    if numeric:
        work = Workspace(len(reference), len(current))
        for name in numeric:
            columns.append(_numeric_drift(reference[name], current[name], numeric_method, work))
    for name in categorical:
        columns.append(_categorical_drift(reference[name], current[name], categorical_method))
    return _result(columns, drift_share, len(reference), len(current))


def evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    numeric_method: DriftMethod,
    categorical_method: DriftMethod,
    drift_share: float,
    sample_rows: int | None = None,
    seed: int = 0,
) -> tuple[DriftResult, Snapshot]:
    """Run Evidently's ``DataDriftPreset`` with the same methods and thresholds per column type.

    Args:
        sample_rows: when set, each side larger than this is sampled down to it (without
            replacement, fixed ``seed``) before Evidently sees it; the verdicts are then those of
            the samples.

    Returns:
        The verdicts read back from the snapshot (per-column tests, ``FAIL`` meaning drifted, and
        the ``DriftedColumnsCount`` share) and the snapshot itself, for ``save_html``/``json``.

    Raises:
        ValueError: as ``detect_drift``.
        RuntimeError: the snapshot lacks a column's test or its count disagrees with the tests.
    """
    _check_inputs(
        reference, current, numeric, categorical, numeric_method, categorical_method, drift_share
    )
    names = [*numeric, *categorical]
    rng = np.random.default_rng(seed)
    ref, cur = (
        _inf_as_missing(_sample(frame[names], sample_rows, rng)) for frame in (reference, current)
    )

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    preset = DataDriftPreset(
        columns=names,
        drift_share=drift_share,
        num_method=numeric_method.method,
        num_threshold=numeric_method.threshold,
        cat_method=categorical_method.method,
        cat_threshold=categorical_method.threshold,
    )
    snapshot = Report([preset], include_tests=True).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    kinds = {**dict.fromkeys(numeric, NUMERIC), **dict.fromkeys(categorical, CATEGORICAL)}
    methods = {NUMERIC: numeric_method, CATEGORICAL: categorical_method}
    verdicts, count, share = _read_snapshot(snapshot.dict())
    columns = []
    for name in names:
        if name not in verdicts:
            raise RuntimeError(f"Evidently's snapshot has no drift test for column {name!r}")
        statistic, drifted = verdicts[name]
        kind = kinds[name]
        columns.append(
            ColumnDrift(
                column=name,
                kind=kind,
                method=methods[kind].method,
                statistic=statistic,
                threshold=methods[kind].threshold,
                drifted=drifted,
                missing_reference=_missing(ref[name]),
                missing_current=_missing(cur[name]),
            )
        )
    result = _result(columns, drift_share, len(ref), len(cur))
    if count != len(result.drifted_columns()) or not math.isclose(share, result.share_drifted):
        raise RuntimeError(
            f"Evidently counts {count} drifted columns (share {share}) but its column tests fail "
            f"for {result.drifted_columns()}"
        )
    return result, snapshot


def _check_inputs(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    numeric_method: DriftMethod,
    categorical_method: DriftMethod,
    drift_share: float,
) -> None:
    for kind, method in ((NUMERIC, numeric_method), (CATEGORICAL, categorical_method)):
        if method.method not in METHODS_BY_KIND[kind]:
            raise ValueError(
                f"method {method.method!r} does not apply to {kind} columns; "
                f"use one of {sorted(METHODS_BY_KIND[kind])}"
            )
    names = [*numeric, *categorical]
    if not names:
        raise ValueError("no column to check: numeric and categorical are both empty")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"columns listed more than once (or as both kinds): {repeated}")
    if not 0 < drift_share <= 1:
        raise ValueError(f"drift_share must be in (0, 1], got {drift_share}")
    for side, frame in (("reference", reference), ("current", current)):
        absent = [n for n in names if n not in frame.columns]
        if absent:
            raise ValueError(f"column(s) {absent} missing from the {side} frame")
        if frame.empty:
            raise ValueError(f"the {side} frame has no rows (columns {names})")
        for name in numeric:
            if not pd.api.types.is_numeric_dtype(frame[name]):
                raise ValueError(
                    f"numeric column {name!r} has dtype {frame[name].dtype} in the {side} frame"
                )


def _result(
    columns: list[ColumnDrift], drift_share: float, rows_reference: int, rows_current: int
) -> DriftResult:
    share = sum(c.drifted for c in columns) / len(columns)
    return DriftResult(
        columns=columns,
        share_drifted=share,
        dataset_drift=share >= drift_share,
        rows_reference=rows_reference,
        rows_current=rows_current,
    )


def _float_values(series: pd.Series) -> np.ndarray:
    if isinstance(series.dtype, np.dtype):
        return series.to_numpy()
    # Nullable extension dtypes (Float64, Int64, ...): pd.NA must become NaN to be dropped.
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _numeric_drift(
    reference: pd.Series, current: pd.Series, method: DriftMethod, work: Workspace
) -> ColumnDrift:
    name = str(reference.name)
    ref = finite_sorted(_float_values(reference), work.reference)
    cur = finite_sorted(_float_values(current), work.current)
    for side, values in (("reference", ref), ("current", cur)):
        if not values.size:
            raise ValueError(
                f"numeric column {name!r} has no finite value in the {side} frame "
                "(NaN and inf are dropped)"
            )
    if method.method == "ks":
        statistic = ks_sorted(ref, cur, work)[1]
    elif method.method == "wasserstein":
        _, cdf_gap, gap = merged_cdf_gap(ref, cur, work)
        # np.std is the population std, as Evidently's; 0.001 is its floor.
        norm = max(float(np.std(ref)), 0.001)
        # Not np.dot: BLAS threads for one short product cost more than they save on 2 busy cores.
        area = float(np.multiply(cdf_gap, gap, out=cdf_gap).sum())
        statistic = area / (ref.size * cur.size) / norm
    else:
        p, q = _numeric_frequencies(ref, cur, work)
        statistic = _binned_distance(method.method, p, q)
    return ColumnDrift(
        column=name,
        kind=NUMERIC,
        method=method.method,
        statistic=statistic,
        threshold=method.threshold,
        drifted=is_drifted(method.method, statistic, method.threshold),
        missing_reference=len(reference) - ref.size,
        missing_current=len(current) - cur.size,
    )


def _numeric_frequencies(
    ref: np.ndarray, cur: np.ndarray, work: Workspace
) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's ``get_binned_data`` for a numeric column, before any zero filling."""
    n, m = ref.size, cur.size
    distinct = 1 + int(np.count_nonzero(np.not_equal(ref[1:], ref[:-1], out=work.mask[: n - 1])))
    if distinct > _MAX_VALUE_BINS:
        both = np.concatenate((ref, cur), out=work.merged[: n + m])
        edges = np.histogram_bin_edges(both, bins="sturges")
        return _sorted_histogram(ref, edges) / n, _sorted_histogram(cur, edges) / m
    ref_values, ref_counts = _run_counts(ref)
    cur_values, cur_counts = _run_counts(cur)
    values = np.union1d(ref_values, cur_values)
    p = np.zeros(values.size)
    q = np.zeros(values.size)
    p[np.searchsorted(values, ref_values)] = ref_counts / n
    q[np.searchsorted(values, cur_values)] = cur_counts / m
    return p, q


def _sorted_histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(values, edges)[0]`` for sorted ``values``, without sorting them again.

    With an array of edges numpy sorts the data and counts with the same two searchsorted calls
    (last bin closed on the right), so the counts are the same.
    """
    cumulative = np.concatenate(
        (values.searchsorted(edges[:-1], side="left"), values.searchsorted(edges[-1:], "right"))
    )
    return np.diff(cumulative)


def _run_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and how often each occurs."""
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    return values[starts], np.diff(np.append(starts, values.size))


def _fill_zeroes(percents: np.ndarray) -> np.ndarray:
    """Evidently's ``feel_zeroes``: empty bins get a small share so that logs stay finite."""
    smallest = percents[percents != 0].min()
    out = percents.astype(np.float64, copy=True)
    out[out == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return out


def _binned_distance(method: str, p: np.ndarray, q: np.ndarray) -> float:
    if method == "jensenshannon":
        return float(distance.jensenshannon(p, q))
    p, q = _fill_zeroes(p), _fill_zeroes(q)
    return float(np.sum((p - q) * np.log(p / q)))


def _category_counts(series: pd.Series) -> pd.Series:
    """Counts per category, without NaN/None/inf and without categories that never occur."""
    counts = series.value_counts(dropna=True, sort=False)
    counts.index = counts.index.astype(object)
    # Evidently turns +-inf into NaN before dropping NaN, in categorical columns too.
    keep = [not (isinstance(k, float) and math.isinf(k)) for k in counts.index]
    return counts[np.asarray(keep, dtype=bool) & (counts.to_numpy() > 0)]


def _categorical_drift(
    reference: pd.Series, current: pd.Series, method: DriftMethod
) -> ColumnDrift:
    name = str(reference.name)
    ref_counts, cur_counts = _category_counts(reference), _category_counts(current)
    for side, counts in (("reference", ref_counts), ("current", cur_counts)):
        if counts.empty:
            raise ValueError(
                f"categorical column {name!r} has no value in the {side} frame "
                "(NaN, None and inf are dropped)"
            )
    keys = ref_counts.index.union(cur_counts.index, sort=False)
    ref_n = ref_counts.reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
    cur_n = cur_counts.reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
    n, m = ref_n.sum(), cur_n.sum()
    if method.method == "chisquare":
        with np.errstate(divide="ignore", invalid="ignore"):
            statistic = float(stats.chisquare(cur_n, ref_n * (m / n)).pvalue)
    else:
        statistic = _binned_distance(method.method, ref_n / n, cur_n / m)
    return ColumnDrift(
        column=name,
        kind=CATEGORICAL,
        method=method.method,
        statistic=statistic,
        threshold=method.threshold,
        drifted=is_drifted(method.method, statistic, method.threshold),
        missing_reference=len(reference) - int(n),
        missing_current=len(current) - int(m),
    )


def _sample(frame: pd.DataFrame, rows: int | None, rng: np.random.Generator) -> pd.DataFrame:
    if rows is None or len(frame) <= rows:
        return frame
    return frame.iloc[np.sort(rng.choice(len(frame), size=rows, replace=False))]


def _inf_as_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with +-inf as NaN (copied only if it holds any).

    Evidently 0.7.23 drops inf with NaN in its per-column tests, but its ``DriftedColumnsCount``
    keeps inf in a column that has no NaN, so the two would disagree.
    """
    infinite = {name: frame[name].isin([np.inf, -np.inf]) for name in frame.columns}
    infinite = {name: rows for name, rows in infinite.items() if rows.any()}
    if not infinite:
        return frame
    frame = frame.copy()
    for name, rows in infinite.items():
        frame.loc[rows, name] = np.nan
    return frame


def _missing(series: pd.Series) -> int:
    return int(series.isna().sum())


def _read_snapshot(snapshot: dict[str, Any]) -> tuple[dict[str, tuple[float, bool]], int, float]:
    """Per-column (drift score, FAIL) and the drifted count and share from ``Snapshot.dict()``."""
    scores: dict[str, float] = {}
    count, share = -1, math.nan
    for metric in snapshot["metrics"]:
        kind = metric["config"]["type"]
        if kind == _EVIDENTLY_VALUE_DRIFT:
            scores[metric["id"]] = float(metric["value"])
        elif kind == _EVIDENTLY_DRIFTED_COUNT:
            count, share = int(metric["value"]["count"]), float(metric["value"]["share"])
    verdicts = {}
    for test in snapshot["tests"]:
        config = test["metric_config"]
        if config["params"]["type"] == _EVIDENTLY_VALUE_DRIFT:
            verdicts[config["params"]["column"]] = (
                scores[config["metric_id"]],
                test["status"] == "FAIL",
            )
    return verdicts, count, share
