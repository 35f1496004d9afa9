"""The statistics that promotion, monitoring and rollouts share: below the stages, so none of
them imports another for its math.

- Two-sample Kolmogorov-Smirnov from two sorted samples merged once (``ks_two_sample``; the
  drift check reuses the merged CDFs for the Wasserstein distance), exact like
  ``scipy.stats.ks_2samp(method="auto")``.
- Bootstrap intervals of a metric difference: paired (both models on the same rows: a comparison,
  a rollout's live pairs) and two-sample (a model on a window against its own held-out figure,
  or each A/B arm on the rows it answered).
- The paired shift of a share and its standard error, and the normal quantile for a confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy import stats

from ctrain.metrics import ResampleMetric, greater_is_better, metric_value

# scipy.stats.ks_2samp(method="auto") is exact up to this many rows a side, asymptotic above.
KS_EXACT_MAX_N = 10_000


class Workspace:
    """Buffers reused from column to column: fresh allocations cost page faults, not just bytes."""

    def __init__(self, n_reference: int, n_current: int) -> None:
        total = n_reference + n_current
        self.reference = np.empty(n_reference)
        self.current = np.empty(n_current)
        self.merged = np.empty(total)
        self.gap = np.empty(total)
        self.cdf_gap = np.empty(total)
        self.from_current = np.empty(total, dtype=bool)
        self.mask = np.empty(total, dtype=bool)


def finite_sorted(values: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """Sort ``values`` into ``buffer``; return the view that excludes NaN and +-inf."""
    out = buffer[: values.size]
    np.copyto(out, values, casting="unsafe")
    out.sort()
    # Sorting puts -inf first and +inf then NaN last, so the finite values are one slice.
    lo = np.searchsorted(out, -np.inf, side="right")
    hi = np.searchsorted(out, np.inf, side="left")
    return out[lo:hi]


def merged_cdf_gap(
    ref: np.ndarray, cur: np.ndarray, work: Workspace
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both samples merged; n * m * |F_ref - F_cur| at each merged value; the gap to the next one.

    Both samples must be sorted. The counts stay integers (exact in float64 below 2**53), so the
    integral and the maximum are exact up to the final division. Inside a run of tied values the
    gap is 0 and the CDF gap is a partial count: it adds nothing to the integral and must not be
    read as a CDF value.
    """
    n, m = ref.size, cur.size
    total = n + m
    # Where each current value lands in the merged order (reference ties first).
    where = np.searchsorted(ref, cur, side="right")
    where += np.arange(m)
    from_current = work.from_current[:total]
    from_current.fill(False)
    from_current[where] = True
    merged = work.merged[:total]
    merged[where] = cur
    merged[np.logical_not(from_current, out=work.mask[:total])] = ref
    gap = work.gap[:total]
    np.subtract(merged[1:], merged[:-1], out=gap[:-1])
    gap[-1] = 0.0
    # Each reference value raises n*m*(F_ref - F_cur) by m, each current value lowers it by n.
    cdf_gap = work.cdf_gap[:total]
    cdf_gap.fill(m)
    cdf_gap[where] = -n
    np.cumsum(cdf_gap, out=cdf_gap)
    np.abs(cdf_gap, out=cdf_gap)
    return merged, cdf_gap, gap


def ks_sorted(ref: np.ndarray, cur: np.ndarray, work: Workspace) -> tuple[float, float]:
    """KS statistic and p-value of two sorted samples, as ``scipy.stats.ks_2samp``."""
    n, m = ref.size, cur.size
    if max(n, m) <= KS_EXACT_MAX_N:
        # scipy's exact distribution: cheap at this size, and not worth re-deriving.
        result = stats.ks_2samp(ref, cur)
        return float(result.statistic), float(result.pvalue)
    merged, cdf_gap, gap = merged_cdf_gap(ref, cur, work)
    # Only the last value of a run of ties carries a true CDF gap.
    tied = np.equal(gap[:-1], 0.0, out=work.mask[: gap.size - 1])
    np.copyto(cdf_gap[:-1], 0.0, where=tied)
    x = merged[int(np.argmax(cdf_gap))]
    # scipy's own float expression at the maximising value, so the two agree to the last bit.
    d = abs(np.searchsorted(ref, x, side="right") / n - np.searchsorted(cur, x, side="right") / m)
    big, small = max(n, m), min(n, m)
    p = stats.kstwo.sf(d, np.round(big * small / (big + small)))
    return float(d), float(np.clip(p, 0.0, 1.0))


def ks_two_sample(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """The two-sided KS statistic and p-value, as ``scipy.stats.ks_2samp(method="auto")``.

    NaN and inf are dropped first.
    """
    ref = finite_sorted(np.asarray(reference, dtype=np.float64), np.empty(np.size(reference)))
    cur = finite_sorted(np.asarray(current, dtype=np.float64), np.empty(np.size(current)))
    if not ref.size or not cur.size:
        raise ValueError("ks_two_sample needs at least one finite value on each side")
    return ks_sorted(ref, cur, Workspace(ref.size, cur.size))


@dataclass(frozen=True)
class Difference:
    """Metric of each model on the same rows and the bootstrap interval of their difference."""

    challenger: float
    champion: float
    diff: float  # oriented so that positive means the challenger is better
    ci_low: float
    ci_high: float
    n_rows: int
    n_resamples: int


def paired_bootstrap(
    y: np.ndarray,
    s_new: np.ndarray,
    s_old: np.ndarray,
    metric: str,
    n_boot: int,
    confidence: float,
    seed: int,
) -> Difference:
    """Percentile interval of ``metric(new) - metric(old)`` over paired row resamples."""
    return _bootstrap((y, s_new), (y, s_old), metric, n_boot, confidence, seed, paired=True)


def two_sample_bootstrap(
    y_new: np.ndarray,
    s_new: np.ndarray,
    y_old: np.ndarray,
    s_old: np.ndarray,
    metric: str,
    n_boot: int,
    confidence: float,
    seed: int,
) -> Difference:
    """Percentile interval of ``metric(new) - metric(old)`` measured on two different sets of rows
    (one model on a live window, against its own held-out figure): each side is resampled on its
    own, so the interval carries the uncertainty of both figures.
    """
    return _bootstrap(
        (y_new, s_new), (y_old, s_old), metric, n_boot, confidence, seed, paired=False
    )


def _bootstrap(new_side, old_side, metric, n_boot, confidence, seed, paired) -> Difference:
    sign = 1.0 if greater_is_better(metric) else -1.0
    (y_new, s_new), (y_old, s_old) = new_side, old_side
    new, old = metric_value(metric, y_new, s_new), metric_value(metric, y_old, s_old)
    on_new, on_old = ResampleMetric(metric, y_new, s_new), ResampleMetric(metric, y_old, s_old)
    y_new, y_old = np.asarray(y_new, dtype=bool), np.asarray(y_old, dtype=bool)
    rng = np.random.default_rng(seed)
    n_new, n_old = len(y_new), len(y_old)
    diffs = []
    for _ in range(n_boot):
        # A resample as counts per row; paired, one draw of rows scores both models.
        c_new = np.bincount(rng.integers(0, n_new, n_new), minlength=n_new)
        c_old = c_new if paired else np.bincount(rng.integers(0, n_old, n_old), minlength=n_old)
        if not (0 < c_new @ y_new < n_new and 0 < c_old @ y_old < n_old):
            continue  # one class only: no AUC on this draw
        diffs.append(sign * (on_new(c_new) - on_old(c_old)))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha]) if diffs else (np.nan, np.nan)
    return Difference(new, old, sign * (new - old), float(lo), float(hi), n_new, len(diffs))


def shift_and_se(new: np.ndarray, old: np.ndarray) -> tuple[float, float]:
    """The share of rows ``new`` predicts positive minus ``old``'s, on the same rows, and its
    standard error (the per-row differences are paired)."""
    d = new.astype(float) - old.astype(float)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def z_value(confidence: float) -> float:
    """The two-sided normal quantile for ``confidence``."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)
