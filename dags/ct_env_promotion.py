"""
### ct_env_promotion: pull a version of another environment into this one

Runs only when a person asks (**Trigger DAG w/ config**: the source environment and its version),
in the target's Airflow: the version's files are carried from the source's MLflow into this
environment's store, checked by the safe loader's checks and against this environment's
features, hashed before and after the write (a version exists here only once its bytes are
verified), compared with this environment's `champion` on its own held-out rows with the paired
rule, and moved by compare-and-set or rejected, with a decision record here and a `proposed`
record in the source. `ctrain env promote --from <env> --version N` does the same from a shell.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from ctrain_common import DEFAULT_ARGS, ENV_PROMOTION, NOTE_KEY, Tell


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
    @task(on_success_callback=Tell("decisions"))
    def promote(params=None, dag_run=None, ti=None) -> dict:
        """Carry, compare, move or reject; the decision."""
        from ctrain import steps

        user = getattr(dag_run, "triggering_user_name", None)
        ctx = {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "trigger_reason": params["reason"],
            "force": params["force"],
            "started_by": user or "",
        }
        decision = steps.promote_across(params["source"], params["version"], ctx)
        ti.xcom_push(key=NOTE_KEY, value=decision["headline"])
        return decision

    promote()


ct_env_promotion()
