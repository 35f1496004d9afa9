"""Resident memory of this process and its peak, read from /proc (Linux only)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in {_STATUS}")


def rss_mb() -> float:
    """Resident set size now, in MB (10**6 bytes)."""
    return _status_kib("VmRSS") * 1024 / 1e6


def peak_mb() -> float:
    """Peak resident set size since start or since ``reset_peak``, in MB."""
    return _status_kib("VmHWM") * 1024 / 1e6


def release_free_memory() -> None:
    """Hand memory that malloc holds but no object uses back to the OS (glibc).

    Without this, the heap left by building the data set is reused by the check and the check's
    increment reads as zero.
    """
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak() -> None:
    """Set the peak back to the current RSS, so a later ``peak_mb`` covers only what follows."""
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def run_measured(args: list[str]) -> tuple[str, float]:
    """Run ``python args...``; return its stdout and its peak RSS in MB as the kernel counted it.

    wait4 gives this one child's rusage, where RUSAGE_CHILDREN would give the largest of all
    children so far.
    """
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} exited with {proc.returncode}")
    # ru_maxrss is in KiB on Linux.
    return out, usage.ru_maxrss * 1024 / 1e6
