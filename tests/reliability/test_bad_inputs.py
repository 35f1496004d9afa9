"""Every bad input of the corpus through real ingest (real files, real Great Expectations).

For each entry: the status it must get; accepted + quarantined = input; its original bytes kept;
no entry left unaccounted for; nothing outside ctrain's home read; no registry write; one short
line of reason; and accepted data that later steps can trust.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from bad_inputs import CASES, SEVERITY, batch, ingest_corpus

from ctrain.settings import default_project_file, load_settings

BY_NAME = {c.name: c for c in CASES}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Land the whole corpus at once and ingest it, as ct_ingest would."""
    root = tmp_path_factory.mktemp("corpus")
    reference = root / "reference.parquet"
    # The valid ranges and categories: those of every generated batch the cases start from, so
    # a case fails only for the fault it was given.
    pd.concat([batch(i) for i in range(50)]).to_parquet(reference, index=False)
    project = yaml.safe_load(default_project_file().read_text())
    project["dataset"]["reference_file"] = str(reference)
    project["validation"]["severity"] = SEVERITY
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump(project))
    settings = load_settings(path, home=str(root / "home"))
    outcomes, deferred = ingest_corpus(settings)
    return settings, outcomes, deferred


def test_the_corpus_has_at_least_sixty_bad_inputs():
    bad = [
        c for c in CASES if c.name not in ("good.parquet", "good_csv.csv", "labels_good.parquet")
    ]
    assert len(bad) >= 60
    assert {c.expect for c in CASES} == {"accepted", "partial", "quarantined", "skipped"}


@pytest.mark.parametrize("name", list(BY_NAME), ids=[repr(n)[:40] for n in BY_NAME])
def test_each_input_gets_its_outcome(run, name):
    settings, outcomes, _ = run
    case = BY_NAME[name]
    if case.expect == "skipped":
        assert name not in outcomes
        assert (settings.landing_dir / name).exists()  # left for its upload to finish
        return
    out = outcomes[name]
    assert out["status"] == case.expect, out["reason"]
    assert out["rows_accepted"] + out["rows_quarantined"] == out["rows_in"]
    assert (out["rows_accepted"] > 0) == (case.expect != "quarantined")
    assert len(out["reason"]) < 1000 and "\n" not in out["reason"]
    assert (out["reason"] == "") == (case.expect == "accepted")


def test_every_entry_is_accounted_for_and_its_bytes_kept(run):
    settings, outcomes, _ = run
    for folder in (settings.landing_dir, settings.labels_landing_dir):
        assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []
    expected = {c.name for c in CASES if c.expect != "skipped"}
    assert set(outcomes) == expected
    kept = {
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in settings.processed_dir.rglob("*")
        if stat.S_ISREG(p.lstat().st_mode)
    }
    for name, out in outcomes.items():
        if out["sha256"]:  # a regular file: its bytes are kept as they came
            assert out["sha256"] in kept, name
        else:  # a link, folder or pipe: moved aside as it was, unopened
            entry = Path(out["quarantine_uri"]) / "entry"
            assert entry.is_symlink() or entry.exists(), name


def test_nothing_outside_the_home_was_read_and_nothing_reached_the_registry(run):
    settings, _, _ = run
    passwd = Path("/etc/passwd").read_bytes()[:20]
    for p in settings.root.rglob("*"):
        if stat.S_ISREG(p.lstat().st_mode):
            assert passwd not in p.read_bytes(), p
    assert not settings.mlflow_dir.exists()


def test_accepted_data_can_be_trusted_by_later_steps(run):
    settings, outcomes, _ = run
    spec = settings.dataset
    declared = {spec.id_column, spec.event_time_column, spec.target, *spec.feature_names}
    soon = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=2)
    for name, out in outcomes.items():
        if not out["accepted_uri"] or BY_NAME[name].labels:
            continue
        df = pd.read_parquet(out["accepted_uri"])
        assert set(df.columns) <= declared, name
        assert len(df) == out["rows_accepted"] and df[spec.id_column].is_unique, name
        for col in spec.numeric:
            assert np.isfinite(df[col].dropna().to_numpy(dtype=float)).all(), (name, col)
        required = [spec.id_column, spec.event_time_column, spec.target] + [
            f.name for f in spec.features if not f.nullable
        ]
        assert not df[required].isna().any().any(), name
        assert (pd.to_datetime(df[spec.event_time_column], utc=True) < soon).all(), name


def test_a_file_still_being_written_is_left_while_it_grows_then_taken_once_whole(run):
    """The corpus's growing CSV: looked at while another process appended to it, deferred at
    least once, then taken once with every row, and the kept bytes are the finished file."""
    settings, outcomes, deferred = run
    finished = batch(53).to_csv(index=False).encode()  # what its writer ends with
    assert deferred["growing.csv"] >= 1
    out = outcomes["growing.csv"]
    assert (out["status"], out["rows_in"], out["rows_accepted"]) == ("accepted", 200, 200)
    assert out["sha256"] == hashlib.sha256(finished).hexdigest()
    kept = [p for p in settings.processed_dir.rglob("growing*.csv")]
    assert [p.read_bytes() for p in kept] == [finished]
    assert set(deferred) == {"growing.csv"}  # nothing else was ever deferred
