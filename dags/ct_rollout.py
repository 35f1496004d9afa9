"""
### ct_rollout: put a challenger before live traffic, then promote it or roll it back

Started by `ct_training` when a challenger wins its comparison and `serving.rollout.strategy` is
`shadow`, `canary` or `ab` (after the approval gate, when one is configured), or by hand from the
UI (**Trigger DAG w/ config**: the version, default `@challenger`, and the strategy).

start (the traffic split in the registry: every `ctrain serve` replica follows it within
`serving.reload_seconds`) → steps (each step lasts `step_seconds` and needs `min_rows` rows
scored by the challenger; its guardrails are error rate, latency, prediction drift against the
champion and, once labels arrive, a paired comparison on the same live rows; a canary moves
through `canary_steps`; a failed guardrail sends all traffic back to the champion at once) →
finish (one decision record: champion moved by compare-and-set, or the rollback with its
evidence). Every change of the split is recorded beside the moves of champion. One rollout at a
time: it owns the split.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from ctrain_common import DEFAULT_ARGS, NOTE_KEY, ROLLOUT, Tell

# The watch's own limit is read at run time, from the project's settings when the rollout starts
# (steps.rollout_watch_seconds); the sensor's timeout is only a ceiling above any of them.
_SENSOR_CEILING_SECONDS = 7 * 24 * 3600

PARAMS = {
    "version": Param(
        "",
        type="string",
        pattern=r"^[0-9]*$",
        description="The model version to roll out; empty = the one aliased @challenger.",
    ),
    "strategy": Param(
        "",
        type="string",
        enum=["", "shadow", "canary", "ab"],
        description="shadow | canary | ab; empty = serving.rollout.strategy of the project.",
    ),
    "reason": Param("manual trigger", type="string", description="Why: goes into every record."),
}


@dag(
    dag_id=ROLLOUT,
    schedule=None,
    catchup=False,
    max_active_runs=1,  # the split has one owner: one rollout at a time
    default_args=DEFAULT_ARGS,
    tags=["ctrain", "serving"],
    doc_md=__doc__,
    params=PARAMS,
)
def ct_rollout():
    @task(on_success_callback=Tell("decisions"))
    def start(params=None, dag_run=None, ti=None) -> dict:
        """Set the split of the strategy; the version must be one that may serve."""
        from airflow.sdk.exceptions import AirflowFailException

        from ctrain import steps
        from ctrain.promotion.promote import PromotionRefused

        conf = dag_run.conf or {}
        ctx = steps.rollout_context(
            dag_run.dag_id,
            dag_run.run_id,
            params["reason"],
            user=getattr(dag_run, "triggering_user_name", None),
            conf=conf,
        )
        try:
            split = steps.start_rollout(params["version"], params["strategy"], ctx)
        except PromotionRefused as exc:  # a retry cannot make the version servable
            ti.xcom_push(key=NOTE_KEY, value=f"refused: {exc}")
            raise AirflowFailException(str(exc)) from exc
        ti.xcom_push(key=NOTE_KEY, value=split["describe"])
        return {"rollout_id": split["rollout_id"], "ctx": ctx, "watch_until": split["watch_until"]}

    @task.sensor(poke_interval=5, timeout=_SENSOR_CEILING_SECONDS, mode="reschedule")
    def watch_steps(started: dict, ti=None):
        """Judge the current step; move the canary on; roll back on a failed guardrail."""
        import time

        from airflow.sdk import PokeReturnValue, get_current_context
        from airflow.sdk.exceptions import AirflowFailException

        from ctrain import steps

        if time.time() > started["watch_until"]:  # finish (all_done) then sends traffic back
            raise AirflowFailException("the rollout outlived its steps' timeouts; rolling back")
        progress = steps.advance_rollout(started["rollout_id"], started["ctx"])
        ti.xcom_push(key=NOTE_KEY, value=progress["detail"][:500])
        if progress["state"] in ("next", "failed"):  # the split moved: say so now, not at the end
            Tell("decisions")(get_current_context())
        done = progress["state"] in ("passed", "failed", "ended")
        return PokeReturnValue(is_done=done, xcom_value=progress if done else None)

    @task(trigger_rule="all_done", on_success_callback=Tell("decisions"))
    def finish(started: dict, ti=None) -> dict:
        """One decision record: promoted (compare-and-set) or rolled back, with the evidence.
        Runs also when the watch failed: the traffic then goes back to the champion."""
        from ctrain import steps

        progress = ti.xcom_pull(task_ids="watch_steps") or {}
        decision = steps.finish_rollout(
            started["rollout_id"], started["ctx"], passed=progress.get("state") == "passed"
        )
        ti.xcom_push(key=NOTE_KEY, value=decision["headline"])
        return decision

    started = start()
    watch_steps(started) >> finish(started)


ct_rollout()
