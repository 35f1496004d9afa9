"""Files in and out: atomic writes (write, fsync, rename) and batch reads that fail with a reason."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SUPPORTED_SUFFIXES = (".csv", ".parquet")


class UnreadableBatch(Exception):
    """A batch file that cannot be read as a table; ``reason`` says why in one line."""

    def __init__(self, path: Path, reason: str):
        reason = " ".join(reason.split())  # a reader's message may span lines (pyarrow's schemas)
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason


class StillWriting(Exception):
    """A landed file changed while ingest read or judged it: it is left where it is, untouched,
    for the next look (a writer is still at it)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The bytes of a file read whole, their hash, and the file's (inode, size, mtime) then."""

    data: bytes
    sha256: str
    stamp: tuple[int, int, int]


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def snapshot(path: Path) -> Snapshot:
    """Read ``path`` whole, once: what is judged and what is kept are these bytes.

    Raises:
        StillWriting: the file changed while it was read (its size, mtime or inode).
    """
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        data = fh.read()
    after = os.lstat(path)
    if _stamp(before) != _stamp(after) or len(data) != after.st_size:
        raise StillWriting(
            path, f"it changed while it was read ({before.st_size} then {after.st_size} bytes)"
        )
    return Snapshot(data, hashlib.sha256(data).hexdigest(), _stamp(after))


def unchanged(path: Path, snap: Snapshot) -> bool:
    """Whether ``path`` is still the file ``snap`` read (same inode, size and mtime)."""
    try:
        return _stamp(os.lstat(path)) == snap.stamp
    except FileNotFoundError:
        return False


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def clean_temp_files(folder: Path, min_age_s: float = 600) -> list[Path]:
    """Remove what killed atomic writes left under ``folder`` (``.<name>.*.tmp``).

    Only files older than ``min_age_s``: a younger one may belong to a write still running.
    """
    if not folder.is_dir():
        return []
    cutoff = time.time() - min_age_s
    removed = []
    for p in folder.rglob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if is_regular_file(p) and p.stat().st_mtime < cutoff:
                p.unlink()
                removed.append(p)
    return removed


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda p: p.write_bytes(data))


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet_atomic(path: Path, data: pd.DataFrame | pa.Table) -> Path:
    if isinstance(data, pa.Table):
        return _atomic(path, lambda p: pq.write_table(data, p))
    return _atomic(path, lambda p: data.to_parquet(p, index=False))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def config_hash(*parts: Any) -> str:
    """A short hash of settings a result depends on besides its data (a verdict, a model)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def frame_hash(df: pd.DataFrame) -> str:
    """Content hash of a frame's values and column names (row order matters)."""
    h = hashlib.sha256(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def landed(folder: Path) -> list[Path]:
    """Everything waiting in ``folder``, by name, but hidden names (``.x``: uploads in flight).

    Not only readable batches: whatever else lies there (another file type, a link, a folder) is
    listed too, so ingest can say what it did with it instead of leaving it unnoticed.
    """
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def stale_hidden(folder: Path, min_age_s: float = 3600) -> list[tuple[Path, float]]:
    """Hidden entries of ``folder`` older than ``min_age_s``, with their age in seconds: an
    upload that never finished, or a file someone hid. Ingest leaves them; it reports them."""
    if not folder.is_dir():
        return []
    now, out = time.time(), []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                age = now - p.lstat().st_mtime
                if age >= min_age_s:
                    out.append((p, age))
    return out


def is_regular_file(path: Path) -> bool:
    """A regular file itself: not a symbolic link (to anything), folder, pipe, socket or device."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def entry_kind(path: Path) -> str:
    """What a non-regular entry is, in words (a link says where it points)."""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return f"a symbolic link to {os.readlink(path)!r}"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or other special file"


def read_table(path: Path, data: bytes | None = None) -> pd.DataFrame:
    """Read a CSV (UTF-8) or Parquet batch; never follows a link or opens a special file.
    With ``data`` (a ``snapshot``), the table is those bytes; ``path`` names them.

    Raises:
        UnreadableBatch: not a regular file, empty, truncated, wrongly encoded or malformed file,
            or no rows.
    """
    if not is_regular_file(path):
        raise UnreadableBatch(path, "not a regular file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableBatch(path, f"unsupported file type {suffix!r} (expected .csv or .parquet)")
    if (len(data) if data is not None else path.stat().st_size) == 0:
        raise UnreadableBatch(path, "file is empty (0 bytes)")
    source = io.BytesIO(data) if data is not None else path
    try:
        if suffix == ".csv":
            # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column name.
            df = pd.read_csv(source, encoding="utf-8-sig", encoding_errors="strict")
        else:
            df = pd.read_parquet(source)
    except UnicodeDecodeError as exc:
        raise UnreadableBatch(
            path, f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise UnreadableBatch(path, "no columns to read (empty CSV)") from exc
    except pd.errors.ParserError as exc:
        raise UnreadableBatch(path, f"malformed CSV: {str(exc).strip()}") from exc
    except Exception as exc:  # pyarrow raises several types for truncated or corrupt files
        raise UnreadableBatch(
            path, f"not a readable Parquet file (truncated or corrupt): {str(exc).strip()[:200]}"
        ) from exc
    if df.empty:
        raise UnreadableBatch(path, "the file has a header but no rows")
    return df
