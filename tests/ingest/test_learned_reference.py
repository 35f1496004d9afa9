"""The learned reference follows the champion: learned from its training window, changed on every
move of the champion, and rows only the old one quarantined are validated and scored again."""

import pandas as pd
import yaml

from ctrain import steps
from ctrain.ingest.profile import load_profile
from ctrain.ingest.validate import LEARNED_ONLY_COLUMN
from ctrain.promotion.promote import manual_promote
from ctrain.records import RunContext
from ctrain.settings import load_settings
from ctrain.storage import read_json, write_parquet_atomic


def _ingest_all(settings):
    return {
        o["batch_id"]: o
        for o in (steps.ingest_one(p, settings) for p in steps.list_landed(settings))
    }


def _with(settings, project_path, **validation):
    """The same project and home with other validation settings (a user changing their YAML)."""
    data = yaml.safe_load(project_path.read_text())
    data["validation"] = {**data["validation"], **validation}
    project_path.write_text(yaml.safe_dump(data))
    return load_settings(project_path)


def test_the_reference_is_the_champions_training_window_once_there_is_one(settings, ingested):
    ingested(3)
    assert load_profile(settings.profile_path)["source"].endswith("batch_0000.parquet")
    decision = steps.run_training(RunContext(), settings=settings)
    assert decision["decision"] == "promoted"
    active = load_profile(settings.profile_path)
    assert active["model_version"] == "1"
    assert active["source"].startswith("training window ")
    # Learned from all three batches' rows, not from the first batch alone.
    assert active["rows"] == 4500


def test_rows_only_a_learned_range_quarantined_are_scored_after_the_reference_changes(
    make_settings, source, client, tmp_path
):
    settings = make_settings(validation={"severity": {"range": "block"}})
    project = tmp_path / "project.yaml"
    for i in range(3):
        source.write_batch(i, settings.landing_dir)
    _ingest_all(settings)
    assert steps.run_training(RunContext(), settings=settings)["decision"] == "promoted"
    hi = load_profile(settings.profile_path)["numeric"]["tenure_months"][1]

    # Ten rows past v1's learned range, one of them with an impossible discount as well.
    shifted = source.batch(3)
    shifted.loc[:9, "tenure_months"] = round(hi * 1.3, 2)
    shifted.loc[9, "discount_rate"] = 7.5
    write_parquet_atomic(settings.landing_dir / "batch_0003.parquet", shifted)
    out = _ingest_all(settings)["batch_0003"]
    assert out["status"] == "partial" and out["rows_quarantined"] == 10
    assert out["reference"] == "1"
    bad = pd.read_parquet(settings.quarantine_dir / "batch_0003" / "rows.parquet")
    assert bad[LEARNED_ONLY_COLUMN].sum() == 9

    # The data moves on (the user lets learned ranges warn for a while), a model learns it, and
    # a person promotes it: its training window is the reference from then on.
    relaxed = _with(settings, project, severity={"range": "warn"})
    grown = source.batch(4)
    grown["tenure_months"] = (grown["tenure_months"] * 2.5).round(2)
    write_parquet_atomic(relaxed.landing_dir / "batch_0004.parquet", grown)
    assert _ingest_all(relaxed)["batch_0004"]["status"] == "accepted"
    settings = _with(settings, project, severity={"range": "block"})
    steps.run_training(RunContext(), settings=settings)
    manual_promote(settings, "2", RunContext(started_by="carol"), client)
    assert load_profile(settings.profile_path)["model_version"] == "2"

    # The nine rows land again and pass; the tenth stays quarantined, where it was.
    again = settings.landing_dir / "batch_0003.after-v2.parquet"
    assert again.is_file() and len(pd.read_parquet(again)) == 9
    marker = read_json(settings.quarantine_dir / "batch_0003" / "requeued.json")
    assert marker == {"reference": "2", "rows": 9, "landed_as": again.name}
    out = _ingest_all(settings)["batch_0003.after-v2"]
    assert out["status"] == "accepted" and out["rows_accepted"] == 9 and out["reference"] == "2"
    scored = steps.score("batch_0003.after-v2", settings)
    preds = pd.read_parquet(scored["predictions_uri"])
    assert sorted(preds["row_id"]) == sorted(shifted.loc[:8, "row_id"])
    assert set(preds["model_version"]) == {"2"}
    assert len(pd.read_parquet(settings.quarantine_dir / "batch_0003" / "rows.parquet")) == 10

    # Sent on once: another move of the champion does not land them again.
    manual_promote(settings, "1", RunContext(started_by="carol"), client)
    assert load_profile(settings.profile_path)["model_version"] == "1"
    assert not list(settings.landing_dir.iterdir())
