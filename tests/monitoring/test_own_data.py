"""Bring your own data: other folders, other column names, CSV files, delayed labels, no code change."""

import json

import yaml

from ctrain import steps
from ctrain.data.demo_source import DemoSource
from ctrain.records import RunContext
from ctrain.settings import load_settings

RENAME = {
    "row_id": "customer_id",
    "event_time": "ts",
    "label": "churned",
    "tenure_months": "tenure",
    "region": "area",
}


def test_the_loop_runs_on_a_users_folders_and_names(tmp_path, monkeypatch):
    features_dir, labels_dir = tmp_path / "incoming" / "features", tmp_path / "incoming" / "labels"
    features_dir.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    project = {
        "model_name": "churn",
        "dataset": {
            "landing_dir": str(features_dir),
            "labels": "delayed",
            "labels_landing_dir": str(labels_dir),
            "target": "churned",
            "id_column": "customer_id",
            "event_time_column": "ts",
            "label_time_column": "known_at",
            "features": [
                {"name": "tenure", "type": "numeric"},
                {"name": "support_calls", "type": "numeric"},
                {"name": "usage_hours", "type": "numeric"},
                {"name": "area", "type": "categorical"},
            ],
        },
        "training": {
            "min_train_rows": 300,
            "candidates": [
                {
                    "name": "lr",
                    "estimator": "sklearn.linear_model.LogisticRegression",
                    "grid": {"C": [1.0]},
                }
            ],
        },
        "promotion": {"floors": {"roc_auc": 0.6}, "slice_columns": ["area"]},
        "monitoring": {"html_reports": False},
    }
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(project))
    monkeypatch.setenv("CTRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CTRAIN_PROJECT", str(path))
    settings = load_settings()

    src = DemoSource(batch_rows=800, covariate_shift_from=3)
    for i in range(4):
        batch = src.batch(i).drop(columns=["label"]).rename(columns=RENAME)
        (features_dir / f"export_{i}.csv").write_text(batch.to_csv(index=False))
        labels = src.labels(i).rename(
            columns={"row_id": "customer_id", "label": "churned", "label_time": "known_at"}
        )
        if i < 3:
            (labels_dir / f"labels_{i}.csv").write_text(labels.to_csv(index=False))

    outcomes = [steps.ingest_one(p, settings) for p in steps.list_landed(settings)]
    assert [o["status"] for o in outcomes] == ["accepted"] * 4
    assert [o["status"] for o in steps.ingest_labels(settings)] == ["accepted"] * 3
    rec = steps.run_training(RunContext(trigger_reason="own data"), settings=settings)
    assert rec["decision"] == "promoted" and rec["model_name"] == "churn"
    scored = [steps.score(b, settings) for b in steps.unscored(settings)]
    assert sum(s["rows"] for s in scored) == 3200
    checked = {c["batch_id"]: c for c in steps.check_windows(settings)}
    assert checked["export_3"]["flags"] == ["data_drift"] and checked["export_0"]["flags"] == []
    summary = json.loads((settings.monitor_dir / "export_3" / "summary.json").read_text())
    assert "tenure" in summary["data_drift"]["drifted_columns"]
    assert summary["performance"]["status"] == "no_labels"
