"""A generated corpus of bad inputs, each with the outcome ingest must give it.

Every case writes one entry into a landing folder (a batch) or the labels landing folder (a
label file). ``make reliability`` and ``tests/reliability/test_bad_inputs.py`` both run it.
Expected statuses: ``accepted``, ``partial`` (bad rows split off), ``quarantined`` (the whole
entry), ``skipped`` (a hidden name: an upload in flight, left where it is). A case with ``grow``
is a file still being written: another process appends to it while ingest looks at it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctrain.data.demo_source import DemoSource

ROWS = 200  # rows of a generated batch; the demo project needs at least 100
# The corpus checks quarantine itself, so the learned ranges and category sets block here; by
# default they warn (tests/data/test_learned_reference.py and tests/ingest/test_ingest.py).
SEVERITY = {"range": "block", "category": "block"}
SRC = DemoSource(batch_rows=ROWS)


@dataclass(frozen=True)
class Case:
    name: str  # the entry's file name
    expect: str  # accepted | partial | quarantined | skipped
    make: Callable[[Path], None]  # writes the entry at this path
    labels: bool = False  # a label file (labels landing) rather than a batch
    grow: tuple[bytes, ...] = ()  # appended by another process while ingest looks at the entry


def batch(i: int) -> pd.DataFrame:
    return SRC.batch(100 + i)


def _parquet(df: pd.DataFrame) -> Callable[[Path], None]:
    return lambda p: df.to_parquet(p, index=False)


def _csv(df: pd.DataFrame, **kw) -> Callable[[Path], None]:
    return lambda p: p.write_text(df.to_csv(index=False, **kw), encoding="utf-8")


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _with(df: pd.DataFrame, rows, column: str, value, dtype=None) -> pd.DataFrame:
    """``df`` with ``value`` in ``column`` on ``rows`` (cast to ``dtype`` first, if given)."""
    df = df.copy()
    if dtype is not None:
        df[column] = df[column].astype(dtype)
    df.loc[rows, column] = value
    return df


def _link(target: str) -> Callable[[Path], None]:
    return lambda p: p.symlink_to(target)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.csv", "x,y\n1,2\n")
    return buf.getvalue()


def _wide(i: int, n: int) -> pd.DataFrame:
    df = batch(i)
    extra = pd.DataFrame(np.zeros((len(df), n)), columns=[f"x{j}" for j in range(n)])
    return pd.concat([df, extra], axis=1)


def _labels(i: int) -> pd.DataFrame:
    return SRC.labels(100 + i)


def _growing(df: pd.DataFrame, head_rows: int, chunk_rows: int) -> tuple[bytes, tuple[bytes, ...]]:
    """A CSV's first ``head_rows`` rows (with the header) and the rest, in chunks of whole rows."""
    header, *rows = df.to_csv(index=False).encode().splitlines(keepends=True)
    rest = rows[head_rows:]
    chunks = tuple(b"".join(rest[i : i + chunk_rows]) for i in range(0, len(rest), chunk_rows))
    return header + b"".join(rows[:head_rows]), chunks


def _cases() -> list[Case]:
    good_csv = batch(1).to_csv(index=False)
    cut = good_csv[: len(good_csv) // 2]
    growing_head, growing_rest = _growing(batch(53), head_rows=20, chunk_rows=10)
    cases = [
        # Well-formed, as a baseline and in odd but valid shapes.
        Case("good.parquet", "accepted", _parquet(batch(0))),
        Case("good_csv.csv", "accepted", _csv(batch(1))),
        Case("UPPER.CSV", "accepted", _csv(batch(2))),
        Case("crlf.csv", "accepted", _bytes(good_csv.replace("\n", "\r\n").encode())),
        Case(
            "bom.csv", "accepted", _bytes(b"\xef\xbb\xbf" + batch(3).to_csv(index=False).encode())
        ),
        Case("float_target.csv", "accepted", _csv(batch(4).astype({"label": float}))),
        Case(
            "int_ids.parquet",
            "accepted",
            _parquet(batch(5).assign(row_id=range(10**6, 10**6 + ROWS))),
        ),
        Case(
            "category_dtype.parquet", "accepted", _parquet(batch(6).astype({"region": "category"}))
        ),
        Case(
            "nullable_all_null.parquet",
            "accepted",
            _parquet(batch(7).assign(payment_delay_days=np.nan)),
        ),
        Case("wide.parquet", "accepted", _parquet(_wide(8, 2000))),
        Case(
            "dup_header.csv",
            "accepted",
            _bytes(
                batch(9)
                .assign(extra=1)
                .to_csv(index=False)
                .replace(",extra\n", ",region\n", 1)
                .encode()
            ),
        ),
        Case("with_index.parquet", "accepted", lambda p: batch(10).to_parquet(p, index=True)),
        Case(
            "mixed_tz.csv",
            "accepted",
            _csv(
                batch(11).assign(
                    event_time=lambda d: [
                        t.isoformat() if i % 2 else t.tz_convert("Europe/Paris").isoformat()
                        for i, t in enumerate(d["event_time"])
                    ]
                )
            ),
        ),
        Case("my batch (copy).csv", "accepted", _csv(batch(12))),
        Case("line\nbreak.csv", "accepted", _csv(batch(13))),
        Case("-dash.csv", "accepted", _csv(batch(14))),
        Case("x" * 150 + ".parquet", "accepted", _parquet(batch(15))),
        Case("naïve_ünïcode.parquet", "accepted", _parquet(batch(16))),
        Case("same_bytes_a.parquet", "accepted", _parquet(batch(17))),
        Case("same_bytes_b.parquet", "accepted", _parquet(batch(17))),
        # Unreadable: quarantined whole, bytes kept.
        Case("empty.csv", "quarantined", _bytes(b"")),
        Case("empty.parquet", "quarantined", _bytes(b"")),
        Case("header_only.csv", "quarantined", _bytes(good_csv.splitlines()[0].encode() + b"\n")),
        Case(
            "truncated.parquet",
            "quarantined",
            lambda p: p.write_bytes(batch(18).to_parquet(index=False)[:3000]),
        ),
        Case(
            "latin1.csv",
            "quarantined",
            _bytes(batch(19).assign(region="zürich").to_csv(index=False).encode("latin-1")),
        ),
        Case("utf16.csv", "quarantined", _bytes(batch(20).to_csv(index=False).encode("utf-16"))),
        Case(
            "ragged.csv",
            "quarantined",
            _bytes((good_csv + "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p\n").encode()),
        ),
        Case("garbage.csv", "quarantined", _bytes(os.urandom(4096))),
        Case("zip_as.parquet", "quarantined", _bytes(_zip())),
        Case(
            "parquet_as.csv",
            "quarantined",
            lambda p: p.write_bytes(batch(21).to_parquet(index=False)),
        ),
        Case("semicolon.csv", "quarantined", _csv(batch(22), sep=";")),
        # A whole-batch check fails.
        Case("missing_id.parquet", "quarantined", _parquet(batch(23).drop(columns=["row_id"]))),
        Case("missing_feature.parquet", "quarantined", _parquet(batch(24).drop(columns=["plan"]))),
        Case("missing_target.parquet", "quarantined", _parquet(batch(25).drop(columns=["label"]))),
        Case("too_few_rows.parquet", "quarantined", _parquet(batch(26).head(5))),
        Case(
            "required_all_null.parquet",
            "quarantined",
            _parquet(batch(27).assign(tenure_months=np.nan)),
        ),
        Case("yes_no_target.csv", "quarantined", _csv(batch(28).assign(label="yes"))),
        Case(
            "most_rows_bad.parquet",
            "quarantined",
            _parquet(_with(batch(29), slice(0, 129), "region", "mars")),
        ),
        Case(
            "list_column.parquet",
            "quarantined",
            _parquet(batch(30).assign(region=[["a", "b"]] * ROWS)),
        ),
        # Some rows fail: split off, the rest accepted.
        Case("truncated_mid_row.csv", "partial", _bytes(cut.encode())),
        Case(
            "strings_in_numeric.csv",
            "partial",
            _csv(_with(batch(31), [3, 4], "tenure_months", "abc", object)),
        ),
        Case(
            "nan_in_required.parquet",
            "partial",
            _parquet(_with(batch(32), [1, 2, 3], "monthly_spend", np.nan)),
        ),
        Case("inf.parquet", "partial", _parquet(_with(batch(33), [0, 9], "usage_hours", np.inf))),
        Case(
            "minus_inf.parquet", "partial", _parquet(_with(batch(34), [5], "usage_hours", -np.inf))
        ),
        Case(
            "huge_number.parquet",
            "partial",
            _parquet(_with(batch(35), [7], "monthly_spend", 1e308)),
        ),
        Case(
            "dup_ids_within.parquet",
            "partial",
            _parquet(_with(batch(36), [1, 2], "row_id", "b0136-000000")),
        ),
        Case("null_ids.parquet", "partial", _parquet(_with(batch(37), [4, 5], "row_id", None))),
        Case("unknown_class.parquet", "partial", _parquet(_with(batch(38), [0, 1, 2], "label", 7))),
        Case(
            "bad_timestamps.csv",
            "partial",
            _csv(_with(batch(39), [3, 8], "event_time", "yesterday-ish", object)),
        ),
        Case(
            "future_times.parquet",
            "partial",
            _parquet(_with(batch(40), [0, 1], "event_time", pd.Timestamp("2096-01-01", tz="UTC"))),
        ),
        Case(
            "huge_cell.parquet",
            "partial",
            _parquet(_with(batch(41), [0], "region", "x" * 1_000_000, object)),
        ),
        Case(
            "newline_in_cell.csv",
            "partial",
            _csv(_with(batch(42), [2], "region", "we\nst", object)),
        ),
        Case(
            "csv_injection.csv",
            "partial",
            _csv(_with(batch(43), [6], "region", "=cmd|' /C calc'!A0", object)),
        ),
        Case(
            "unseen_category.parquet",
            "partial",
            _parquet(_with(batch(44), [0, 1], "plan", "platinum", object)),
        ),
        Case(
            "padded_category.csv",
            "partial",
            _csv(_with(batch(45), [3], "region", " west ", object)),
        ),
        Case(
            "negative_discount.parquet",
            "partial",
            _parquet(_with(batch(46), [4, 5], "discount_rate", -0.5)),
        ),
        Case(
            "some_rows_bad.parquet",
            "partial",
            _parquet(_with(batch(47), slice(0, 60), "region", "mars")),
        ),
        # Values a guess would make silently wrong: refused, never read as something else.
        Case(
            "epoch_seconds.parquet",
            "quarantined",
            _parquet(
                batch(49).assign(event_time=lambda d: d["event_time"].astype("int64") // 10**9)
            ),
        ),
        Case(
            "epoch_millis.csv",
            "quarantined",
            _csv(batch(50).assign(event_time=lambda d: d["event_time"].astype("int64") // 10**6)),
        ),
        Case(
            "some_epoch_times.csv",
            "partial",
            _csv(_with(batch(51), [2, 3], "event_time", "1700000000", object)),
        ),
        Case(
            "list_region.parquet",
            "quarantined",
            _parquet(batch(52).assign(region=lambda d: d["region"].map(lambda r: [r, r]))),
        ),
        # Still being written: looked at while a writer appends, taken once, whole.
        Case("growing.csv", "accepted", _bytes(growing_head), grow=growing_rest),
        # Not batches at all.
        Case("passwd.csv", "quarantined", _link("/etc/passwd")),
        Case("dir_link.parquet", "quarantined", _link("/tmp")),
        Case("dangling.csv", "quarantined", _link("/nonexistent/nothing.csv")),
        Case("pipe.csv", "quarantined", lambda p: os.mkfifo(p)),
        Case("folder.parquet", "quarantined", lambda p: p.mkdir()),
        Case("notes.txt", "quarantined", _bytes(b"remember the milk\n")),
        Case("data.json", "quarantined", _bytes(b'{"row_id": 1}')),
        Case("batch.csv.gz", "quarantined", _bytes(b"\x1f\x8b\x08\x00")),
        Case(".uploading.parquet", "skipped", _parquet(batch(48))),
        # Label files.
        Case("labels_good.parquet", "accepted", _parquet(_labels(0)), labels=True),
        Case(
            "labels_unknown_ids.parquet",
            "accepted",
            _parquet(_labels(1).assign(row_id=lambda d: "zz" + d["row_id"])),
            labels=True,
        ),
        Case(
            "labels_extra_columns.csv", "accepted", _csv(_labels(2).assign(note="x")), labels=True
        ),
        Case(
            "labels_unknown_class.parquet",
            "quarantined",
            _parquet(_labels(3).assign(label=5)),
            labels=True,
        ),
        Case(
            "labels_yes.csv",
            "partial",
            _csv(_with(_labels(4), [0, 1], "label", "yes", object)),
            labels=True,
        ),
        Case(
            "labels_dup_ids.parquet",
            "partial",
            _parquet(_with(_labels(5), [1, 2], "row_id", "b0105-000000")),
            labels=True,
        ),
        Case(
            "labels_no_time.parquet",
            "quarantined",
            _parquet(_labels(6).drop(columns=["label_time"])),
            labels=True,
        ),
        Case(
            "labels_bad_time.csv",
            "partial",
            _csv(_with(_labels(7), [3], "label_time", "soon", object)),
            labels=True,
        ),
        Case(
            "labels_future.parquet",
            "partial",
            _parquet(
                _with(_labels(8), [0, 1, 2], "label_time", pd.Timestamp("2099-01-01", tz="UTC"))
            ),
            labels=True,
        ),
        Case(
            "labels_epoch_time.parquet",
            "quarantined",
            _parquet(
                _labels(9).assign(label_time=lambda d: d["label_time"].astype("int64") // 10**9)
            ),
            labels=True,
        ),
        # Named to come after labels_good: its first rows say the opposite of that file's.
        Case(
            "labels_good_contradicted.parquet",
            "partial",
            _parquet(
                _with(_labels(0).head(50), slice(0, 9), "label", 1 - _labels(0)["label"].head(10))
            ),
            labels=True,
        ),
        Case("labels_empty.csv", "quarantined", _bytes(b""), labels=True),
        Case("labels_link.csv", "quarantined", _link("/etc/passwd"), labels=True),
    ]
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names repeat"
    return cases


CASES = _cases()

_WRITER = """\
import sys, time
chunks = sys.stdin.buffer.read().split(b"\\0")
with open(sys.argv[1], "ab", buffering=0) as fh:
    for c in chunks:
        fh.write(c)
        time.sleep(0.02)
"""


def _start_writer(path: Path, chunks: tuple[bytes, ...]) -> subprocess.Popen:
    """Another process appends ``chunks`` to ``path``; returns once its first chunk is in."""
    size = path.stat().st_size
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdin=subprocess.PIPE)
    writer.stdin.write(b"\0".join(chunks))
    writer.stdin.close()
    while path.stat().st_size == size and writer.poll() is None:
        time.sleep(0.001)
    return writer


def ingest_corpus(settings, cases: list[Case] = CASES) -> tuple[dict[str, dict], Counter]:
    """Land every case and ingest the landing folders as ``ct_ingest`` does, looking again while
    a writer is at work; returns the final outcome per entry name and the looks deferred."""
    from ctrain import steps

    for case in cases:
        folder = settings.labels_landing_dir if case.labels else settings.landing_dir
        folder.mkdir(parents=True, exist_ok=True)
        case.make(folder / case.name)
    growing = {c.name: c.grow for c in cases if c.grow}
    writers: dict[str, subprocess.Popen] = {}
    outcomes: dict[str, dict] = {}
    deferred: Counter = Counter()
    while pending := steps.list_landed(settings):
        looks = (len(outcomes), deferred.total())
        for path in pending:
            name = Path(path).name
            if name in growing and name not in writers:
                writers[name] = _start_writer(Path(path), growing[name])
            out = steps.ingest_one(path, settings)
            if out["status"] == "deferred":
                deferred[name] += 1
            else:
                outcomes[name] = out
        if (len(outcomes), deferred.total()) == looks:
            break  # nothing taken and nothing changing: what is left, the callers count as lost
    for name, writer in writers.items():
        assert writer.wait(timeout=60) == 0, f"the writer of {name} failed"
    outcomes.update({o["source_file"]: o for o in steps.ingest_labels(settings)})
    return outcomes, deferred
