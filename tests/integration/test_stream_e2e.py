"""The whole loop under the real Airflow scheduler: drift in the stream leads to a retrain and a promotion."""

import json
from pathlib import Path

import pytest
from tests_support import bootstrap_champion

from ctrain.data.demo_source import DemoSource
from ctrain.demo import run_stream
from ctrain.promotion.decisions import list_decisions
from ctrain.runtime import TASK_PRELOAD, migrate

pytestmark = pytest.mark.integration


def test_drift_in_the_stream_retrains_and_promotes_with_the_reason(
    make_settings, client, monkeypatch
):
    monkeypatch.setenv("CTRAIN_DATASET__LABELS", "delayed")
    monkeypatch.setenv("CTRAIN_MONITORING__HTML_REPORTS", "false")
    settings = make_settings()
    assert settings.dataset.labels == "delayed" and not settings.monitoring.html_reports
    bootstrap_champion(settings, DemoSource(**settings.demo.model_dump()))
    migrate(settings, settings.root / "logs" / "migrate.log")

    timeline = run_stream(settings, settings.root / "logs", start=3, drift_from=5, stop=7)

    by_batch = {e["batch"]: e for e in timeline}
    assert not by_batch[3]["requested"] and not by_batch[4]["requested"]  # stable: nothing fires
    fired = [e for e in timeline if e["requested"]]
    assert len(fired) == 1 and fired[0]["batch"] in (5, 6)
    decision = fired[0]["decision"]
    assert decision.decision == "promoted", decision
    assert decision.airflow_dag_id == "ct_training"
    assert decision.trigger_reason.startswith("data drift in")
    record = list_decisions(client, settings, limit=1)[0]
    assert record.record_run_id == decision.record_run_id
    mv = client.get_model_version_by_alias(settings.model_name, "champion")
    assert mv.tags["trigger_reason"] == decision.trigger_reason
    evidence = json.loads(Path(mv.tags["trigger_evidence"]).read_text())
    assert evidence["evidence"] and all(w["flagged"] for w in evidence["evidence"])
    # The scheduler started its task workers from the forkserver that preloaded the libraries.
    scheduler_log = (settings.root / "logs" / "airflow" / "scheduler.log").read_text()
    assert "Set multiprocessing start method to 'forkserver' for scheduler" in scheduler_log
    assert f"Set forkserver preload modules for scheduler: {list(TASK_PRELOAD)}" in scheduler_log
