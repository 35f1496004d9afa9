"""Files in and out: atomic writes (write, fsync, rename) and batch reads that fail with a reason."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
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
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason


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


def batch_files(folder: Path) -> list[Path]:
    """CSV and Parquet files waiting in ``folder``, by name (hidden and temp files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_SUFFIXES
    )


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (UTF-8) or Parquet batch.

    Raises:
        UnreadableBatch: empty, truncated, wrongly encoded or malformed file, or no rows.
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableBatch(path, f"unsupported file type {suffix!r} (expected .csv or .parquet)")
    if path.stat().st_size == 0:
        raise UnreadableBatch(path, "file is empty (0 bytes)")
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, encoding="utf-8", encoding_errors="strict")
        else:
            df = pd.read_parquet(path)
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
