import pandas as pd
import pytest

from ctrain.storage import (
    UnreadableBatch,
    frame_hash,
    read_table,
    write_parquet_atomic,
    write_text_atomic,
)


def _frame():
    return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.csv", b"", "file is empty"),
        ("header.csv", b"a,b\n", "header but no rows"),
        ("latin1.csv", "a,b\n1,caf\u00e9\n".encode("latin-1"), "not UTF-8 text: byte 0xe9"),
        ("ragged.csv", b"a,b\n1,2\n3,4,5,6\n", "malformed CSV"),
        ("junk.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
        ("batch.xlsx", b"whatever", "unsupported file type"),
    ],
)
def test_unreadable_files_get_a_one_line_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableBatch, match=reason):
        read_table(path)


def test_truncated_parquet_is_unreadable(tmp_path):
    good = write_parquet_atomic(tmp_path / "good.parquet", _frame())
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(UnreadableBatch, match="truncated or corrupt"):
        read_table(cut)
    pd.testing.assert_frame_equal(read_table(good), _frame())


def test_atomic_write_leaves_the_old_file_and_no_temp_on_failure(tmp_path):
    target = write_text_atomic(tmp_path / "x.txt", "old")

    class Boom:
        def to_parquet(self, *_a, **_k):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(target, Boom())
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_frame_hash_depends_on_content_only():
    a, b = _frame(), _frame()
    assert frame_hash(a) == frame_hash(b)
    b.loc[0, "a"] = 9
    assert frame_hash(a) != frame_hash(b)


def test_temp_files_of_killed_writes_are_cleaned_but_not_a_running_ones(tmp_path):
    import os
    import time

    from ctrain.storage import clean_temp_files

    old = tmp_path / "a" / ".batch_0001.parquet.x1y2.tmp"
    young = tmp_path / ".batch_0002.parquet.z3.tmp"
    kept = tmp_path / "batch_0001.parquet"
    for p in (old, young, kept):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    os.utime(kept, (hours_ago, hours_ago))
    assert clean_temp_files(tmp_path) == [old]
    assert not old.exists() and young.exists() and kept.exists()
