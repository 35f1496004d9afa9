"""Ingest on real files with real Great Expectations: routing, reasons, counts, retries."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrain import steps
from ctrain.data.demo_source import corrupt_rows
from ctrain.ingest.batches import ingest_file, pending_files
from ctrain.ingest.profile import load_profile
from ctrain.ingest.validate import LEARNED_ONLY_COLUMN, REASON_COLUMN
from ctrain.storage import write_parquet_atomic


def _land(settings, name, df):
    return write_parquet_atomic(settings.landing_dir / name, df)


def _ingest_all(settings):
    return {
        o["batch_id"]: o
        for o in (steps.ingest_one(p, settings) for p in steps.list_landed(settings))
    }


def test_good_batches_are_accepted_and_inputs_moved_not_deleted(settings, ingested):
    out = ingested(2)
    assert [o["status"] for o in out] == ["accepted", "accepted"]
    assert pending_files(settings) == []
    assert sorted(p.name for p in settings.processed_dir.iterdir()) == [
        "batch_0000.parquet",
        "batch_0001.parquet",
    ]
    assert len(pd.read_parquet(settings.accepted_dir / "batch_0000.parquet")) == 1500
    assert load_profile(settings.profile_path)["source"].endswith("batch_0000.parquet")


def test_some_bad_rows_are_split_off_with_counts_that_add_up(settings, source):
    source.write_batch(0, settings.landing_dir)
    _land(settings, "batch_0001.parquet", corrupt_rows(source.batch(1), 0.09, seed=3))
    out = _ingest_all(settings)["batch_0001"]
    assert out["status"] == "partial"
    assert out["rows_accepted"] + out["rows_quarantined"] == out["rows_in"] == 1500
    # A third of the broken rows have an unknown region: a learned category set only warns, so
    # they are accepted and flagged; the impossible discounts (the user's own expectation) and
    # the missing labels are quarantined.
    assert out["rows_quarantined"] == 90
    assert any("'region'" in w and "45 of 1500 rows" in w for w in out["warnings"])
    good = pd.read_parquet(settings.accepted_dir / "batch_0001.parquet")
    bad = pd.read_parquet(settings.quarantine_dir / "batch_0001" / "rows.parquet")
    assert set(good["row_id"]).isdisjoint(bad["row_id"])
    assert set(good["row_id"]) | set(bad["row_id"]) == set(source.batch(1)["row_id"])
    assert (good["region"] == "atlantis").sum() == 45
    assert bad[REASON_COLUMN].str.contains("expect_column_values_to_be_between:discount_rate").sum()
    assert not bad[LEARNED_ONLY_COLUMN].any()
    reason = (settings.quarantine_dir / "batch_0001" / "reason.txt").read_text()
    assert "batch batch_0001" in reason and "'discount_rate'" in reason and "'label'" in reason
    assert (
        json.loads((settings.quarantine_dir / "batch_0001" / "validation.json").read_text())[
            "success"
        ]
        is False
    )


def test_missing_column_quarantines_the_whole_batch_and_says_which(settings, source):
    source.write_batch(0, settings.landing_dir)
    _land(settings, "batch_0001.parquet", source.batch(1).drop(columns=["plan"]))
    out = _ingest_all(settings)["batch_0001"]
    assert out["status"] == "quarantined"
    assert (
        out["reason"]
        == "batch batch_0001: expect_column_to_exist failed on column 'plan': the column is missing"
    )
    assert out["rows_quarantined"] == out["rows_in"] == 1500 and out["rows_accepted"] == 0
    assert not (settings.accepted_dir / "batch_0001.parquet").exists()
    assert len(pd.read_parquet(settings.quarantine_dir / "batch_0001" / "rows.parquet")) == 1500


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("batch_0001.csv", b"", "file is empty"),
        ("batch_0001.csv", "row_id,label\n1,\xe9\n".encode("latin-1"), "not UTF-8"),
        ("batch_0001.parquet", b"PAR1 garbage", "not a readable Parquet file"),
    ],
)
def test_unreadable_files_are_quarantined_whole_with_their_bytes_kept(
    settings, source, name, content, reason
):
    source.write_batch(0, settings.landing_dir)
    (settings.landing_dir / name).write_bytes(content)
    out = _ingest_all(settings)["batch_0001"]
    assert out["status"] == "quarantined"
    assert reason in out["reason"] and "batch batch_0001" in out["reason"]
    assert (settings.quarantine_dir / "batch_0001" / name).read_bytes() == content
    assert (settings.processed_dir / name).read_bytes() == content
    assert not (settings.accepted_dir / "batch_0001.parquet").exists()


def test_values_of_the_wrong_type_are_row_failures(settings, source):
    source.write_batch(0, settings.landing_dir)
    df = source.batch(1).astype({"usage_hours": object})
    df.loc[[3, 7], "usage_hours"] = "twelve"
    (settings.landing_dir / "batch_0001.csv").write_text(df.to_csv(index=False))
    out = _ingest_all(settings)["batch_0001"]
    assert out["status"] == "partial" and out["rows_quarantined"] == 2
    assert "values_parse_as_number on 'usage_hours' (2 rows" in out["reason"]
    bad = pd.read_parquet(settings.quarantine_dir / "batch_0001" / "rows.parquet")
    assert list(bad["usage_hours"]) == ["twelve", "twelve"]  # kept as they arrived


def test_too_many_bad_rows_quarantine_the_whole_batch(make_settings, source):
    settings = make_settings(validation={"severity": {"category": "block"}})
    source.write_batch(0, settings.landing_dir)
    df = source.batch(1)
    df.loc[:1000, "region"] = "atlantis"
    _land(settings, "batch_0001.parquet", df)
    out = _ingest_all(settings)["batch_0001"]
    assert out["status"] == "quarantined" and out["rows_accepted"] == 0
    assert "row_split_max_fraction" in out["reason"]


def test_learned_checks_warn_by_default_and_report(settings, source):
    source.write_batch(0, settings.landing_dir)
    _land(settings, "batch_0001.parquet", source.batch(1).assign(region="atlantis"))
    out = (
        json.loads((settings.outcomes_dir / "batch_0001.json").read_text())
        if _ingest_all(settings)
        else None
    )
    assert out["status"] == "accepted" and out["rows_accepted"] == 1500
    assert any("'region'" in w for w in out["warnings"])


def test_user_expectations_from_the_yaml_are_enforced(make_settings, source):
    settings = make_settings(
        dataset={
            "expectations": [
                {
                    "type": "expect_column_max_to_be_between",
                    "kwargs": {"column": "support_calls", "max_value": 3},
                    "severity": "block",
                }
            ]
        }
    )
    source.write_batch(0, settings.landing_dir)
    out = _ingest_all(settings)["batch_0000"]
    assert out["status"] == "quarantined"
    assert "expect_column_max_to_be_between failed on column 'support_calls'" in out["reason"]


def test_retry_after_a_crash_before_the_move_redoes_nothing(settings, source):
    path = source.write_batch(0, settings.landing_dir)
    steps.list_landed(settings)
    profile = load_profile(settings.profile_path)
    first = ingest_file(path, settings, profile)
    # The task died after writing the outcome but before moving the input: put it back.
    (settings.processed_dir / path.name).rename(path)
    mtime = (settings.accepted_dir / "batch_0000.parquet").stat().st_mtime_ns
    again = ingest_file(path, settings, profile)
    assert again == first
    assert not path.exists() and (settings.processed_dir / path.name).exists()
    assert (settings.accepted_dir / "batch_0000.parquet").stat().st_mtime_ns == mtime


def test_same_name_with_new_content_is_a_new_batch(settings, source):
    source.write_batch(0, settings.landing_dir)
    _ingest_all(settings)
    df = source.batch(1)
    _land(settings, "batch_0000.parquet", df)
    out = _ingest_all(settings)
    (batch_id,) = out
    assert batch_id.startswith("batch_0000-") and out[batch_id]["status"] == "accepted"
    assert len(list(settings.accepted_dir.glob("*.parquet"))) == 2
    assert len(list(settings.processed_dir.iterdir())) == 2


def test_integral_float_labels_from_csv_are_valid(settings, source):
    source.write_batch(0, settings.landing_dir)
    df = source.batch(1)
    df["label"] = df["label"].astype(float)
    df.loc[0, "label"] = np.nan
    (settings.landing_dir / "batch_0001.csv").write_text(df.to_csv(index=False))
    out = _ingest_all(settings)["batch_0001"]
    assert out["status"] == "partial" and out["rows_quarantined"] == 1


def test_a_label_file_delivered_again_with_other_rows_is_kept_beside_the_first(delayed, source):
    delayed = delayed()  # this test's settings
    from ctrain.ingest.labels import label_store

    landing = delayed.labels_landing_dir
    landing.mkdir(parents=True)
    first, second = source.labels(0).iloc[:300], source.labels(0).iloc[300:700]
    (landing / "l5.csv").write_text(first.to_csv(index=False))
    (a,) = steps.ingest_labels(delayed)
    (landing / "l5.csv").write_text(second.to_csv(index=False))
    (b,) = steps.ingest_labels(delayed)
    assert a["batch_id"] == "l5" and b["batch_id"].startswith("l5-")
    assert a["rows_accepted"] == 300 and b["rows_accepted"] == 400
    assert len(label_store(delayed)) == 700  # neither delivery replaced the other
    kept = {p.name for p in (delayed.processed_dir / "labels").iterdir()}
    assert kept == {"l5.csv", f"l5-{b['sha256'][:8]}.csv"}  # both original files, bytes kept


def test_quarantined_label_rows_keep_the_values_they_came_with(delayed, source):
    delayed = delayed()  # this test's settings
    landing = delayed.labels_landing_dir
    landing.mkdir(parents=True)
    labels = source.labels(0).iloc[:200].astype({"label": object})
    labels.loc[[3, 7], "label"] = "yes"
    (landing / "l6.csv").write_text(labels.to_csv(index=False))
    (out,) = steps.ingest_labels(delayed)
    assert out["status"] == "partial" and out["rows_quarantined"] == 2
    assert "values_parse_as_class label on 'label' (2 rows" in out["reason"]
    bad = pd.read_parquet(delayed.quarantine_dir / "labels-l6" / "rows.parquet")
    assert bad["label"].tolist() == ["yes", "yes"]
    assert out["rows_accepted"] + out["rows_quarantined"] == out["rows_in"] == 200


def test_a_label_file_mostly_wrong_is_quarantined_whole(delayed, source):
    delayed = delayed()  # this test's settings
    landing = delayed.labels_landing_dir
    landing.mkdir(parents=True)
    labels = source.labels(0).iloc[:100].assign(label=9)
    labels.loc[:10, "label"] = 1
    (landing / "l7.parquet").write_bytes(labels.to_parquet(index=False))
    (out,) = steps.ingest_labels(delayed)
    assert out["status"] == "quarantined" and out["rows_accepted"] == 0
    assert "row_split_max_fraction" in out["reason"]
    assert not (delayed.labels_dir / "l7.parquet").exists()


def _everything_under(folder):
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_links_pipes_and_folders_in_landing_are_quarantined_without_being_read(
    settings, source, tmp_path
):
    secret = tmp_path / "outside" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("row_id,label\nTOP-SECRET-CONTENT,1\n")
    source.write_batch(0, settings.landing_dir)
    (settings.landing_dir / "evil.csv").symlink_to(secret)
    os.mkfifo(settings.landing_dir / "pipe.csv")  # opening it would block the task forever
    (settings.landing_dir / "sub.parquet").mkdir()
    out = _ingest_all(settings)
    assert len(out) == 4 and out["batch_0000"]["status"] == "accepted"
    special = {o["source_file"]: o for o in out.values() if o["batch_id"] != "batch_0000"}
    assert set(special) == {"evil.csv", "pipe.csv", "sub.parquet"}
    for o in special.values():
        assert o["status"] == "quarantined" and o["rows_in"] == 0
        assert "not a regular file" in o["reason"] and "without being read" in o["reason"]
    assert f"symbolic link to {str(secret)!r}" in special["evil.csv"]["reason"]
    assert sorted(p.name for p in settings.landing_dir.iterdir()) == []  # every entry accounted
    # The link moved aside as a link; what it points at was never copied into ctrain's home.
    moved = settings.quarantine_dir / special["evil.csv"]["batch_id"] / "entry"
    assert moved.is_symlink() and secret.exists()
    assert b"TOP-SECRET-CONTENT" not in _everything_under(settings.root)


def test_other_file_types_are_quarantined_with_their_bytes(settings, source):
    source.write_batch(0, settings.landing_dir)
    (settings.landing_dir / "notes.txt").write_bytes(b"not a batch")
    out = _ingest_all(settings)["notes"]
    assert out["status"] == "quarantined" and "unsupported file type '.txt'" in out["reason"]
    assert (settings.quarantine_dir / "notes" / "notes.txt").read_bytes() == b"not a batch"


@pytest.mark.parametrize(
    "name",
    ["export 2024-01.csv", "a\nb;rm -rf.csv", "-rf.csv", "é" * 120 + ".csv"],
    ids=["space", "control", "dash", "long"],
)
def test_any_file_name_gives_a_batch_id_ingest_makes(settings, source, name):
    from ctrain.ingest.route import is_batch_id

    source.write_batch(0, settings.landing_dir)  # the first, plain one learns the profile
    _ingest_all(settings)
    (settings.landing_dir / name).write_text(source.batch(1).to_csv(index=False))
    (out,) = _ingest_all(settings).values()
    assert out["status"] == "accepted" and out["source_file"] == name
    assert is_batch_id(out["batch_id"]) and out["batch_id"].endswith(out["sha256"][:8])
    assert any("not a plain batch name" in w for w in out["warnings"])
    assert (settings.accepted_dir / f"{out['batch_id']}.parquet").is_file()
    kept = [p for p in settings.processed_dir.iterdir() if p.name.startswith(out["batch_id"])]
    assert len(kept) == 1 and kept[0].read_text() == source.batch(1).to_csv(index=False)


@pytest.mark.parametrize(
    "batch_id", ["../accepted/batch_0000", "../processed/batch_0000", "/etc/passwd", "", 7]
)
def test_a_batch_id_from_outside_never_becomes_a_path(settings, ingested, batch_id):
    from ctrain.ingest.batches import UnknownBatch

    ingested(1)
    before = (settings.accepted_dir / "batch_0000.parquet").read_bytes()
    with pytest.raises(UnknownBatch, match="not a batch id ingest makes"):
        steps.score(batch_id, settings)
    assert (settings.accepted_dir / "batch_0000.parquet").read_bytes() == before
    assert not settings.predictions_dir.exists()


def test_a_huge_cell_gives_a_short_one_line_reason_and_keeps_its_value(make_settings, source):
    settings = make_settings(validation={"severity": {"category": "block"}})
    source.write_batch(0, settings.landing_dir)
    df = source.batch(1)
    huge = "X\n" * 500_000  # a megabyte, with line breaks, in one cell
    df["region"] = df["region"].astype(object)
    df.loc[[0, 1], "region"] = huge
    _land(settings, "batch_0001.parquet", df)
    out = _ingest_all(settings)["batch_0001"]
    assert out["status"] == "partial" and out["rows_quarantined"] == 2
    assert len(out["reason"]) < 1000 and "\n" not in out["reason"]
    assert "region" in out["reason"]
    bad = pd.read_parquet(settings.quarantine_dir / "batch_0001" / "rows.parquet")
    assert (bad["region"] == huge).all()


def test_undeclared_columns_are_dropped_and_counted_never_passed_on(settings, source):
    df = source.batch(0)
    for i in range(50):
        df[f"extra_{i}"] = i
    _land(settings, "batch_0000.parquet", df)
    out = _ingest_all(settings)["batch_0000"]
    assert out["status"] == "accepted" and out["columns_dropped"] == 50
    assert any("50 undeclared columns dropped" in w for w in out["warnings"])
    kept = pd.read_parquet(settings.accepted_dir / "batch_0000.parquet").columns
    assert not any(c.startswith("extra_") for c in kept)
    assert len(pd.read_parquet(settings.processed_dir / "batch_0000.parquet").columns) == len(
        df.columns
    )  # the original is kept whole


def test_undeclared_columns_can_quarantine_the_batch_instead(make_settings, source):
    settings = make_settings(validation={"undeclared_columns": "quarantine"})
    source.write_batch(0, settings.landing_dir)
    _ingest_all(settings)
    _land(settings, "batch_0001.parquet", source.batch(1).assign(surprise=1))
    out = _ingest_all(settings)["batch_0001"]
    assert out["status"] == "quarantined" and "no_undeclared_columns" in out["reason"]


def test_an_inf_in_the_first_batch_does_not_open_the_learned_range(settings, source):
    df = source.batch(0)
    df.loc[0, "usage_hours"] = np.inf
    _land(settings, "batch_0000.parquet", df)
    out = _ingest_all(settings)["batch_0000"]
    lo, hi = load_profile(settings.profile_path)["numeric"]["usage_hours"]
    assert np.isfinite(lo) and np.isfinite(hi)
    assert out["status"] == "partial" and out["rows_quarantined"] == 1
    assert "values_are_finite on 'usage_hours' (1 rows" in out["reason"]
    source.write_batch(1, settings.landing_dir)
    source.write_batch(2, settings.landing_dir)
    _ingest_all(settings)
    from ctrain.records import RunContext

    assert steps.run_training(RunContext(), settings=settings)["decision"] == "promoted"


def test_far_future_event_times_fail_their_rows(settings, source):
    source.write_batch(0, settings.landing_dir)
    _ingest_all(settings)
    df = source.batch(1)
    df.loc[:4, "event_time"] = pd.Timestamp.now(tz="UTC") + pd.DateOffset(years=70)
    _land(settings, "batch_0001.parquet", df)
    out = _ingest_all(settings)["batch_0001"]
    assert out["status"] == "partial" and out["rows_quarantined"] == 5
    assert "event_time_not_in_future" in out["reason"]


def test_a_verdict_is_replayed_only_under_the_same_validation_config(make_settings, source):
    strict = make_settings(validation={"min_rows": 5000})
    path = source.write_batch(0, strict.landing_dir)
    first = _ingest_all(strict)["batch_0000"]
    assert first["status"] == "quarantined"
    fixed = make_settings(validation={"min_rows": 50})
    (fixed.processed_dir / path.name).rename(path)  # the same bytes, delivered again
    again = _ingest_all(fixed)["batch_0000"]
    assert again["status"] == "accepted" and again["config_hash"] != first["config_hash"]
    (fixed.processed_dir / path.name).rename(path)
    assert _ingest_all(fixed)["batch_0000"] == again  # same bytes, same config: replayed


def test_the_window_follows_arrival_and_a_repeated_id_keeps_its_latest_row(settings, source):
    from ctrain.ingest.batches import accepted_batches
    from ctrain.records import RunContext

    _land(settings, "z_first.parquet", source.batch(0))
    _ingest_all(settings)
    second = source.batch(1)
    second.loc[:99, "row_id"] = source.batch(0)["row_id"][:100].to_numpy()  # 100 ids again
    _land(settings, "a_second.parquet", second)
    _ingest_all(settings)
    assert [p.stem for p in accepted_batches(settings)] == ["z_first", "a_second"]
    window = steps.assemble(RunContext(window_batches=1).to_xcom(), settings)
    assert window["batches"] == ["a_second"]
    both = steps.assemble(RunContext().to_xcom(), settings)
    assert both["rows_superseded"] == 100
    assert both["rows_train"] + both["rows_holdout"] == 2 * 1500 - 100


def test_a_hidden_file_left_in_landing_is_reported_not_taken(settings, source, caplog):
    import time

    source.write_batch(0, settings.landing_dir)
    fresh = settings.landing_dir / ".uploading.parquet"
    old = settings.landing_dir / ".forgotten.csv"
    for p in (fresh, old):
        p.write_bytes(b"x")
    day_ago = time.time() - 86400
    os.utime(old, (day_ago, day_ago))
    with caplog.at_level("WARNING", logger="ctrain.steps"):
        assert [Path(p).name for p in steps.list_landed(settings)] == ["batch_0000.parquet"]
    assert ".forgotten.csv has been in" in caplog.text and "24.0 h" in caplog.text
    assert ".uploading.parquet" not in caplog.text
    assert old.exists() and fresh.exists()  # left where they are


def _csv_rows(df) -> list[bytes]:
    header, *rows = df.to_csv(index=False).encode().splitlines(keepends=True)
    return [header, *rows]


def test_a_file_that_changes_while_it_is_judged_is_left_whole_for_the_next_look(settings, source):
    """A writer appends while ingest validates: nothing is written, the file stays; the next
    look judges the whole file, and what is kept has the hash of what was judged."""
    import hashlib

    from ctrain.ingest.batches import destinations
    from ctrain.ingest.profile import ensure_profile
    from ctrain.ingest.route import route_file
    from ctrain.ingest.validate import validate_batch

    ensure_profile(settings, [_land(settings, "batch_0000.parquet", source.batch(0))])
    lines = _csv_rows(source.batch(1))
    path = settings.landing_dir / "batch_0001.csv"
    path.write_bytes(b"".join(lines[:491]))  # the header and 490 rows, the writer still at it
    profile = load_profile(settings.profile_path)

    def validate(df, name):
        return validate_batch(df, name, settings.dataset, settings.validation, profile)

    def validate_while_the_writer_goes_on(df, name):
        with open(path, "ab") as fh:
            fh.write(b"".join(lines[491:]))
        return validate(df, name)

    dest = destinations(settings)
    first = route_file(path, dest, validate_while_the_writer_goes_on, "cfg")
    assert first.status == "deferred" and "changed while it was judged" in first.reason
    assert path.read_bytes() == b"".join(lines)  # untouched, whole
    assert not dest.outcome_path("batch_0001").exists()
    assert not dest.accepted_path("batch_0001").exists()

    second = route_file(path, dest, validate, "cfg")
    assert (second.status, second.rows_in, second.rows_accepted) == ("accepted", 1500, 1500)
    kept = (settings.processed_dir / "batch_0001.csv").read_bytes()
    assert kept == b"".join(lines)
    assert hashlib.sha256(kept).hexdigest() == second.sha256


def test_a_csv_growing_while_ingest_runs_is_ingested_whole_once(settings, source):
    """A real writer in another process appends a CSV in chunks while ingest keeps looking:
    every look either leaves the file (deferred) or takes it whole, once."""
    import hashlib
    import subprocess
    import sys

    ingested_first = _land(settings, "batch_0000.parquet", source.batch(0))
    steps.ingest_one(str(ingested_first), settings)
    lines = _csv_rows(source.batch(1))
    final = settings.landing_dir / "batch_0001.csv"
    chunks = [b"".join(lines[i : i + 30]) for i in range(0, len(lines), 30)]
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "chunks = sys.stdin.buffer.read().split(b'\\0')\n"
            "with open(sys.argv[1], 'ab', buffering=0) as fh:\n"
            "    for c in chunks:\n"
            "        fh.write(c); time.sleep(0.02)\n",
            str(final),
        ],
        stdin=subprocess.PIPE,
    )
    writer.stdin.write(b"\0".join(chunks))
    writer.stdin.close()
    seen = []
    while writer.poll() is None or final.exists():
        if final.exists():
            seen.append(steps.ingest_one(str(final), settings))
    assert writer.returncode == 0
    # The writer sleeps a second in all between its chunks: ingest looked while it wrote.
    assert any(o["status"] == "deferred" for o in seen)
    taken = [o for o in seen if o["status"] != "deferred"]
    assert len(taken) == 1, [(o["status"], o["rows_in"], o["reason"]) for o in seen]
    (done,) = taken
    assert (done["status"], done["rows_in"], done["rows_accepted"]) == ("accepted", 1500, 1500)
    kept = (settings.processed_dir / "batch_0001.csv").read_bytes()
    assert kept == b"".join(lines) and hashlib.sha256(kept).hexdigest() == done["sha256"]
    assert sorted(p.name for p in settings.processed_dir.iterdir()) == [
        "batch_0000.parquet",
        "batch_0001.csv",
    ]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_an_epoch_number_as_event_time_is_refused_not_read_as_1970(settings, source, fmt):
    """Seconds in Parquet, milliseconds in CSV: neither becomes a 1970 timestamp."""
    df = source.batch(0)
    epoch = df["event_time"].astype("int64") // (10**9 if fmt == "parquet" else 10**6)
    df = df.assign(event_time=epoch)
    path = settings.landing_dir / f"batch_0000.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        path.write_text(df.to_csv(index=False))
    else:
        df.to_parquet(path, index=False)
    (out,) = _ingest_all(settings).values()
    assert out["status"] == "quarantined" and out["rows_accepted"] == 0
    assert "values_parse_as_timestamp on 'event_time' (1500 rows" in out["reason"]
    assert "an epoch's unit, s or ms, cannot be known" in out["reason"]


def test_a_list_column_is_refused_not_written_as_text(settings, source):
    """A Parquet list<string> in a categorical column fails its rows; it never becomes a
    category like "['north' 'north']"."""
    df = source.batch(0)
    df["region"] = df["region"].map(lambda r: [r, r])
    _land(settings, "batch_0000.parquet", df)
    (out,) = _ingest_all(settings).values()
    assert (out["status"], out["rows_accepted"]) == ("quarantined", 0)
    assert "values_are_scalars on 'region' (1500 rows, lists or mappings, e.g. [" in out["reason"]
    assert not (settings.accepted_dir / "batch_0000.parquet").exists()


def test_label_times_in_the_future_are_refused(delayed, source):
    delayed = delayed()
    labels = source.labels(0).iloc[:200].copy()
    labels.loc[:4, "label_time"] = pd.Timestamp("2099-01-01", tz="UTC")
    write_parquet_atomic(delayed.labels_landing_dir / "labels_0000.parquet", labels)
    (out,) = steps.ingest_labels(delayed)
    assert (out["status"], out["rows_quarantined"]) == ("partial", 5)
    assert "label_time_not_in_future on 'label_time' (5 rows" in out["reason"]


@pytest.mark.parametrize("severity", ["block", "warn"])
def test_a_label_that_contradicts_the_store_is_refused_or_counted(make_settings, source, severity):
    """The same ids labelled 0 in one file and 1 in another: by default the second file's
    contradicting rows are quarantined; with label_conflict: warn they are accepted and counted,
    and the later label wins."""
    from ctrain.ingest.labels import label_store

    settings = make_settings(
        dataset={"labels": "delayed"},
        validation={"severity": {"label_conflict": severity}},
    )
    first = source.labels(0).iloc[:200]
    write_parquet_atomic(settings.labels_landing_dir / "labels_a.parquet", first)
    steps.ingest_labels(settings)
    flipped = first.iloc[:20].assign(
        label=1 - first["label"].iloc[:20],
        label_time=first["label_time"].iloc[:20] + pd.Timedelta(hours=1),
    )
    again = pd.concat([flipped, source.labels(0).iloc[200:300]], ignore_index=True)
    write_parquet_atomic(settings.labels_landing_dir / "labels_b.parquet", again)
    (out,) = steps.ingest_labels(settings)
    said = out["reason"] + " ".join(out["warnings"])
    assert "labels_agree_with_the_label_store" in said and "20 of 120 rows" in said
    assert "0 before, 1 here" in said or "1 before, 0 here" in said
    store = label_store(settings).set_index("row_id")["label"]
    ids = flipped["row_id"].astype(str)
    if severity == "block":
        assert (out["rows_quarantined"], out["rows_accepted"]) == (20, 100)
        assert (store[ids].to_numpy() == first["label"].iloc[:20].to_numpy()).all()
    else:
        assert (out["rows_quarantined"], out["rows_accepted"]) == (0, 120)
        assert (store[ids].to_numpy() == flipped["label"].to_numpy()).all()
