"""
### ct_env_promotion: pull a version of another environment into this one

Runs only when a person asks (**Trigger DAG w/ config**: the source environment and its version),
in the target's Airflow: the version's files are carried from the source's MLflow into this
environment's store, checked by the safe loader's checks and against this environment's
features, hashed before and after the write (a version exists here only once its bytes are
verified), compared with this environment's `champion` on its own held-out rows with the paired
rule, load-tested where `promotion.predeployment` says (staging and prod by default), approved
by a person where `promotion.approval` is required (not the one who asked: refused and recorded),
and moved by compare-and-set or rejected, with a decision record here and a `proposed` record in
the source. `ctrain env promote --from <env> --version N` does the same from a shell, where no
approval is required.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from ctrain_common import (
    APPROVAL_TASK,
    DEFAULT_ARGS,
    ENV_PROMOTION,
    NOTE_KEY,
    ApprovalRequest,
    Tell,
)


@dag(
    dag_id=ENV_PROMOTION,
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ctrain", "promotion"],
    doc_md=__doc__,
    params={
        "source": Param(
            "dev", enum=["dev", "staging", "prod"], description="The environment to pull from."
        ),
        "version": Param(
            "", type="string", pattern=r"^[0-9]{1,9}$", description="Its model version."
        ),
        "force": Param(
            False,
            type="boolean",
            description="Promote if it loads, fits and meets the floors, even without a "
            "significant gain over this environment's champion.",
        ),
        "reason": Param(
            "environment promotion", type="string", description="Goes into the records."
        ),
    },
)
def ct_env_promotion():
    @task
    def run_context(params=None, dag_run=None, ti=None) -> dict:
        """Who asked for the pull and why (an approval by that same person is refused)."""
        user = getattr(dag_run, "triggering_user_name", None)
        return {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "trigger_reason": params["reason"],
            "force": params["force"],
            "started_by": user or "",
            "requested_by": user or "",
        }

    @task
    def pull(ctx: dict, params=None) -> dict:
        """Carry the version's bytes here (verified by hash), compare it with this
        environment's champion on its own held-out rows, load-test it where
        promotion.predeployment says; nothing moves yet."""
        from ctrain import steps

        return steps.pull(params["source"], params["version"], ctx)

    @task
    def approval_gate(pulled: dict, ctx: dict) -> dict | None:
        """The approval request when this environment requires one and the pull would move
        champion, else None: the approval task then skips."""
        from ctrain import steps

        return steps.approval_request(pulled["comparison"], ctx)

    # A failed step upstream stops promote; a skipped approval (nobody asked) does not.
    @task(trigger_rule="none_failed", on_success_callback=Tell("decisions"))
    def promote(
        pulled: dict | None,
        ctx: dict,
        request: dict | None,
        answer: dict | None,
        params=None,
        ti=None,
    ) -> dict:
        """Compare-and-set of champion (after the approver's answer, when one was asked), a
        decision record here and a `proposed` record in the source."""
        from airflow.sdk.exceptions import AirflowSkipException

        from ctrain import steps

        if pulled is None:
            raise AirflowSkipException("nothing was pulled")
        comparison, dataset = pulled["comparison"], pulled["dataset"]
        if request:
            decision = steps.promote_after_approval(comparison, ctx, dataset, answer)
        else:
            decision = steps.promote(comparison, ctx)
        steps.record_proposal(params["source"], params["version"], decision, ctx)
        ti.xcom_push(key=NOTE_KEY, value=decision["headline"])
        return decision

    ctx = run_context()
    pulled = pull(ctx)
    request = approval_gate(pulled, ctx)
    answer = ApprovalRequest(task_id=APPROVAL_TASK, request=request)
    promote(pulled, ctx, request, answer.output)


ct_env_promotion()
