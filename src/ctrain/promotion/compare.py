"""Compare challenger and champion on the same held-out rows, with a paired bootstrap.

Both models score the same rows; each bootstrap resample draws row indices once and computes both
metrics on them, so the interval is of the *paired* difference. The decision rules, in order:
validation status, absolute floors, first champion, force, significance plus minimum improvement
(or non-inferiority, against a condemned champion or on a planned follow-up), then slice
guardrails. The first rule that decides is named in the result.

A champion the monitor holds decisive evidence against (``monitoring.trigger.standing_change``)
is judged where it was condemned: when enough held-out rows come from the condemned windows, both
models are compared on those rows (the figure on every held-out row is recorded beside it), and
the challenger wins when it is not worse there by more than ``promotion.non_inferiority_margin``.
On a turning change the held-out rows mix the old rule and the new; a champion already shown to
fail on the new one is no status quo to defend against a challenger that learned it. The same
margin holds for the monitor's planned follow-up after a change (``trigger.GROWN``): the champion
learned the new regime from too little, the challenger from more of it, and it serves unless it
is worse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ctrain.metrics import greater_is_better, metric_value
from ctrain.model_io import features, positive_scores, target
from ctrain.records import Comparison, DatasetWindow, RegisteredVersion, RunContext
from ctrain.registry import current_champion, load_model, version_uri
from ctrain.settings import PromotionConfig, Settings
from ctrain.stats import Difference, paired_bootstrap
from ctrain.storage import write_json_atomic


def slice_metrics(
    frame: pd.DataFrame,
    y: np.ndarray,
    s_new: np.ndarray,
    s_old: np.ndarray | None,
    cfg: PromotionConfig,
) -> list[dict[str, Any]]:
    """The metric per value of each slice column, for slices with enough rows and both classes."""
    out = []
    for col in cfg.slice_columns:
        for value, idx in frame.groupby(col, dropna=False).indices.items():
            if len(idx) < cfg.slice_min_rows or len(np.unique(y[idx])) < 2:
                continue
            row = {
                "column": col,
                "value": str(value),
                "rows": len(idx),
                "challenger": metric_value(cfg.metric, y[idx], s_new[idx]),
            }
            if s_old is not None:
                row["champion"] = metric_value(cfg.metric, y[idx], s_old[idx])
                sign = 1.0 if greater_is_better(cfg.metric) else -1.0
                row["diff"] = sign * (row["challenger"] - row["champion"])
            out.append(row)
    return out


def decide(
    cfg: PromotionConfig,
    validation_status: str,
    floors: dict[str, float],
    paired: Difference | None,
    slices: list[dict[str, Any]],
    force: bool,
    non_inferior: str = "",
    champion_floors: dict[str, float] | None = None,
) -> tuple[str, str, str]:
    """``(action, rule, reason)`` with action ``promote`` or ``reject``.

    ``non_inferior`` says why the challenger needs only to be non-inferior, not significantly
    better (the champion is condemned where ``paired`` was measured, or the run is a planned
    follow-up); it is said after the interval.
    ``champion_floors`` are the condemned champion's figures on the rows ``floors`` were
    measured on: a floor the champion misses by more than the challenger does not keep it."""
    if validation_status != "passed":
        return "reject", "validation", f"validation_status is {validation_status!r}, not 'passed'"
    missed = []
    for name, value in floors.items():
        floor = cfg.floors[name]
        ok = value >= floor if greater_is_better(name) else value <= floor
        held = (champion_floors or {}).get(name)
        if (
            not ok
            and held is not None
            and (held < value if greater_is_better(name) else held > value)
        ):
            # The floor keeps bad models from serving; the one serving is worse on these rows.
            missed.append(
                f"{name}={value:.4f} misses the absolute floor {floor}, but the condemned "
                f"champion is further from it on the same rows ({held:.4f})"
            )
        elif not ok:
            return "reject", "floor", f"{name}={value:.4f} misses the absolute floor {floor}"
    action, rule, reason = _versus(cfg, paired, slices, force, non_inferior)
    if missed and action == "promote":
        reason = "; ".join([reason, *missed])
    return action, rule, reason


def _versus(
    cfg: PromotionConfig,
    paired: Difference | None,
    slices: list[dict[str, Any]],
    force: bool,
    non_inferior: str,
) -> tuple[str, str, str]:
    """The rules after validation and floors: first champion, force, the paired comparison."""
    if paired is None:
        return "promote", "first_champion", "no champion yet and every absolute floor is met"
    if force:
        return "promote", "forced", "force=true: comparison recorded but not required"
    interval = (
        f"{paired.diff:+.4f} [{paired.ci_low:+.4f}, {paired.ci_high:+.4f}] at {cfg.confidence:.0%}"
    )
    if non_inferior:
        interval += f" {non_inferior}"
    better = paired.ci_low > 0 and paired.diff >= cfg.min_improvement
    margin = cfg.non_inferiority_margin
    if non_inferior and margin > 0 and not better:
        if not paired.ci_low > -margin:
            return (
                "reject",
                "inferior",
                f"{cfg.metric} difference {interval} may be worse than the champion by more "
                f"than non_inferiority_margin {margin}",
            )
        verdict = (
            "promote",
            "non_inferior",
            f"{cfg.metric} difference {interval} is within non_inferiority_margin {margin}",
        )
        return _slice_guardrail(cfg, slices) or verdict
    if not paired.ci_low > 0:
        return "reject", "not_significant", f"{cfg.metric} difference {interval} does not exclude 0"
    if paired.diff < cfg.min_improvement:
        return (
            "reject",
            "min_improvement",
            f"{cfg.metric} difference {interval} is below min_improvement {cfg.min_improvement}",
        )
    return _slice_guardrail(cfg, slices) or (
        "promote",
        "significant_improvement",
        f"{cfg.metric} difference {interval} excludes 0 and meets min_improvement",
    )


def _slice_guardrail(cfg: PromotionConfig, slices: list[dict[str, Any]]):
    for s in slices:
        if "diff" in s and s["diff"] < -cfg.slice_tolerance:
            return (
                "reject",
                "slice_guardrail",
                f"slice {s['column']}={s['value']} ({s['rows']} rows) is worse by {-s['diff']:.4f} "
                f"> slice_tolerance {cfg.slice_tolerance}",
            )
    return None


def condemned_mask(
    settings: Settings, holdout: pd.DataFrame, windows: tuple[str, ...]
) -> np.ndarray:
    """Which held-out rows come from the accepted batches ``windows`` (by id)."""
    from ctrain.ingest.batches import accepted_path, read_accepted

    id_col = settings.dataset.id_column
    ids: set = set()
    for batch in windows:
        path = accepted_path(settings, batch)  # checked: a name from the monitor's records
        if path.exists():
            ids.update(read_accepted([path])[id_col])
    return holdout[id_col].isin(ids).to_numpy()


def compare(
    settings: Settings,
    challenger: RegisteredVersion,
    dataset: DatasetWindow,
    ctx: RunContext,
    client,
    condemned: tuple[str, tuple[str, ...]] | None = None,
    follow_up: tuple[str, str] | None = None,
) -> Comparison:
    """Score both models on the held-out rows and propose promote or reject, with the evidence.

    ``condemned`` is (champion version, windows) when the monitor holds decisive evidence
    against that champion on those windows: if at least ``monitoring.min_rows`` held-out rows of
    both classes come from them and the champion is still that version, the comparison is made
    on those rows (module docstring). ``follow_up`` is (champion version, the request's reason)
    when this run is the monitor's planned follow-up on that champion. The full comparison
    (floors and slices too) is written next to the dataset.
    """
    cfg, spec, name = settings.promotion, settings.dataset, settings.model_name
    champion_version = current_champion(client, name)
    version = challenger.version
    mv = client.get_model_version(name, version)
    holdout = pd.read_parquet(dataset.holdout_uri)
    X = features(holdout, spec)
    y = target(holdout, spec) == spec.positive_class
    s_new = positive_scores(load_model(version_uri(name, version)), X, spec.positive_class)
    s_old = None
    paired = None
    if champion_version is not None and champion_version != version:
        s_old = positive_scores(
            load_model(version_uri(name, champion_version)), X, spec.positive_class
        )
        paired = paired_bootstrap(
            y, s_new, s_old, cfg.metric, cfg.n_bootstrap, cfg.confidence, settings.training.seed
        )
    judged, where, windows, all_rows = paired, "", (), None
    if paired is not None and condemned and condemned[0] == champion_version:
        mask = condemned_mask(settings, holdout, condemned[1])
        if mask.sum() >= settings.monitoring.min_rows and len(np.unique(y[mask])) == 2:
            judged = paired_bootstrap(
                y[mask],
                s_new[mask],
                s_old[mask],
                cfg.metric,
                cfg.n_bootstrap,
                cfg.confidence,
                settings.training.seed,
            )
            windows = tuple(condemned[1])
            where = (
                f"on the {int(mask.sum())} held-out rows of {', '.join(windows)}, where v"
                f"{champion_version} failed decisively; on all {len(holdout)} held-out rows "
                f"{paired.diff:+.4f} [{paired.ci_low:+.4f}, {paired.ci_high:+.4f}]"
            )
            all_rows = {
                "challenger": paired.challenger,
                "champion": paired.champion,
                "diff": paired.diff,
                "ci_low": paired.ci_low,
                "ci_high": paired.ci_high,
                "rows": len(holdout),
            }
    held = {m: metric_value(m, y, s_old) for m in cfg.floors} if where else None
    if paired is not None and not where and follow_up and follow_up[0] == champion_version:
        where = f"(the planned follow-up: {follow_up[1]})"
    floors = {m: metric_value(m, y, s_new) for m in cfg.floors}
    slices = slice_metrics(X, y, s_new, s_old, cfg)
    action, rule, reason = decide(
        cfg,
        mv.tags.get("validation_status", "missing"),
        floors,
        judged,
        slices,
        ctx.force,
        where,
        held,
    )
    path = (
        settings.datasets_dir
        / dataset.dataset_id
        / f"comparison-v{version}-vs-{champion_version or 'none'}.json"
    )
    result = Comparison(
        model_name=name,
        challenger_version=version,
        champion_seen=champion_version,
        action=action,
        rule=rule,
        reason=reason,
        metric=cfg.metric,
        challenger_metric=judged.challenger if judged else metric_value(cfg.metric, y, s_new),
        champion_metric=judged.champion if judged else None,
        diff=judged.diff if judged else None,
        ci_low=judged.ci_low if judged else None,
        ci_high=judged.ci_high if judged else None,
        confidence=cfg.confidence,
        n_resamples=judged.n_resamples if judged else 0,
        holdout_rows=len(holdout),
        dataset_id=dataset.dataset_id,
        comparison_uri=str(path),
        condemned_windows=windows,
        condemned_rows=judged.n_rows if windows else 0,
        all_rows=all_rows,
    )
    floor_figures = {m: {"value": v, "floor": cfg.floors[m]} for m, v in floors.items()}
    write_json_atomic(path, result.to_xcom() | {"floors": floor_figures, "slices": slices})
    return result
