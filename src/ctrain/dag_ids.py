"""The ids of ctrain's DAGs, named once: the DAG files, the plugin, the demo and the runtime use
these. Plain strings, so a DAG file can import them while it is parsed."""

INGEST = "ct_ingest"
TRAINING = "ct_training"
BATCH_INFERENCE = "ct_batch_inference"
DRIFT_MONITOR = "ct_drift_monitor"
ROLLOUT = "ct_rollout"
DEADLINES = "ct_deadlines"
ENV_PROMOTION = "ct_env_promotion"

ALL = (INGEST, TRAINING, BATCH_INFERENCE, DRIFT_MONITOR, ROLLOUT, DEADLINES, ENV_PROMOTION)

# The XCom key under which a task leaves the one line its DAG run's note shows (the plugin's
# listener writes it on the run when the run ends).
NOTE_KEY = "ctrain_note"

# The answers ct_training's approval task offers (the DAG and ctrain.promotion.approval agree).
APPROVE, REJECT = "Approve", "Reject"

# ct_training's human-in-the-loop task: while it waits, a retrain is "waiting for approval".
APPROVAL_TASK = "approval"
