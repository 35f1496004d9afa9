"""
### ct_deadlines: tell the operators what the loop failed to do in time

Runs every few minutes (`schedules.deadlines`, default every 5) and looks at ctrain's records:
an accepted batch without predictions past `alerts.arrival_to_predictions_minutes`, scored windows
the monitor has not checked for `alerts.monitor_silent_hours`, an approval request expiring
within `alerts.approval_expiry_warning_minutes`, and a move of champion no one was told of (the
CLI's promote or rollback, a move made outside ctrain). Each is told once to the routes of its
kind (`notifications.routes`). `ct_training` running past its bound is not looked for here: it is
an Airflow Deadline Alert on `ct_training` itself.
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, dag, task
from ctrain_common import DEADLINES, DEFAULT_ARGS, approval_state, send_apprise, settings


@dag(
    dag_id=DEADLINES,
    schedule=(
        CronTriggerTimetable(settings().schedules.deadlines, timezone="UTC")
        if settings().schedules.deadlines
        else None
    ),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ctrain", "alerts"],
    doc_md=__doc__,
)
def ct_deadlines():
    @task
    def look(ti=None) -> dict:
        """Find what is overdue and tell it, once per thing found."""
        from ctrain import steps

        found = steps.watch_deadlines(approval_state(ti), send=send_apprise)
        for title in found["found"]:
            print(f"overdue: {title}")
        return found

    look()


ct_deadlines()
