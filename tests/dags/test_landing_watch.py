"""The landing folders' watcher: each arrival is announced once, whole, and nothing is touched."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
from ctrain_watch import Arrivals, LandedFilesTrigger, look  # noqa: E402


def test_each_arrival_is_announced_once_while_it_stays(tmp_path):
    arrivals = Arrivals(settle_looks=1)
    (tmp_path / "batch_1.csv").write_text("a\n1\n")
    assert arrivals.update(look(str(tmp_path))) == []  # seen once: maybe still being written
    assert arrivals.update(look(str(tmp_path))) == ["batch_1.csv"]
    for _ in range(3):
        assert arrivals.update(look(str(tmp_path))) == []
    (tmp_path / "batch_2.csv").write_text("a\n2\n")
    (tmp_path / "labels_1.csv").write_text("a\n3\n")
    arrivals.update(look(str(tmp_path)))
    assert arrivals.update(look(str(tmp_path))) == ["batch_2.csv", "labels_1.csv"]


def test_a_file_still_growing_waits_until_it_stops(tmp_path):
    arrivals = Arrivals(settle_looks=1)
    growing = tmp_path / "big.csv"
    growing.write_text("a\n")
    for i in range(3):
        assert arrivals.update(look(str(tmp_path))) == []
        with growing.open("a") as f:
            f.write(f"{i}\n" * 100)
    arrivals.update(look(str(tmp_path)))
    assert arrivals.update(look(str(tmp_path))) == ["big.csv"]


def test_hidden_uploads_are_not_announced_until_renamed_and_a_name_that_lands_again_is(tmp_path):
    arrivals = Arrivals(settle_looks=0)
    (tmp_path / ".batch_3.parquet.tmp").write_bytes(b"x" * 10)
    assert arrivals.update(look(str(tmp_path))) == []
    os.replace(tmp_path / ".batch_3.parquet.tmp", tmp_path / "batch_3.parquet")
    assert arrivals.update(look(str(tmp_path))) == ["batch_3.parquet"]
    (tmp_path / "batch_3.parquet").rename(tmp_path / "elsewhere")  # ingest moved it out
    (tmp_path / "elsewhere").unlink()
    assert arrivals.update(look(str(tmp_path))) == []
    (tmp_path / "batch_3.parquet").write_bytes(b"y")  # delivered again
    assert arrivals.update(look(str(tmp_path))) == ["batch_3.parquet"]


def test_a_folder_that_does_not_exist_yet_is_empty(tmp_path):
    assert look(str(tmp_path / "not_yet")) == {}


def test_the_trigger_yields_one_event_per_look_naming_everything_new_and_leaves_it(tmp_path):
    for name in ("b1.parquet", "b2.parquet", "b3.parquet"):
        (tmp_path / name).write_bytes(b"data")
    trigger = LandedFilesTrigger(directory=str(tmp_path), poll_seconds=0.01, settle_looks=1)

    async def first_event():
        return await anext(trigger.run())

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=10))
    assert event.payload == {
        "directory": str(tmp_path),
        "names": ["b1.parquet", "b2.parquet", "b3.parquet"],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1.parquet", "b2.parquet", "b3.parquet"]
    classpath, kwargs = trigger.serialize()
    assert classpath == "ctrain_watch.LandedFilesTrigger"
    assert LandedFilesTrigger(**kwargs).serialize() == (classpath, kwargs)


def _ingest_schedule(tmp_path, watch_seconds: str):
    """ct_ingest's timetable as the DAG processor builds it, in a fresh process."""
    code = (
        "import json\n"
        "from tests_support import load_dagbag\n"
        "bag = load_dagbag()\n"
        "t = bag.dags['ct_ingest'].timetable\n"
        "c = getattr(t, 'asset_condition', None)\n"
        "assets = c.objects if c else []\n"
        "print(json.dumps({'errors': list(bag.import_errors), 'type': type(t).__name__,\n"
        "  'watchers': {a.name: a.watchers[0].trigger.serialize() for a in assets}}))\n"
    )
    env = os.environ | {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "AIRFLOW_HOME": str(tmp_path),
        "CTRAIN_SCHEDULES__WATCH_SECONDS": watch_seconds,
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ct_ingest_starts_on_arrival_with_its_cron_as_a_safety_net(tmp_path, settings):
    got = _ingest_schedule(tmp_path, "2")
    assert got["errors"] == [] and got["type"] == "AssetOrTimeSchedule"
    assert got["watchers"] == {
        "ctrain_landing": [
            "ctrain_watch.LandedFilesTrigger",
            {"directory": str(settings.landing_dir), "poll_seconds": 2.0, "settle_looks": 1},
        ],
        "ctrain_labels_landing": [
            "ctrain_watch.LandedFilesTrigger",
            {"directory": str(settings.labels_landing_dir), "poll_seconds": 2.0, "settle_looks": 1},
        ],
    }
    assert _ingest_schedule(tmp_path, "0") == {
        "errors": [],
        "type": "CronTriggerTimetable",
        "watchers": {},
    }
