"""The embedded Airflow's preload of the task libraries: it must import, and be safe to fork."""

import os
import subprocess
import sys

from ctrain.runtime import TASK_PRELOAD

_IMPORT_ALL = (
    "import importlib, sys, threading\n"
    "for name in sys.argv[1:]:\n"
    "    importlib.import_module(name)\n"
    "print(threading.active_count(), sorted(t.name for t in threading.enumerate()))\n"
)


def test_every_preloaded_module_imports_and_none_starts_a_thread(tmp_path):
    # multiprocessing's forkserver skips a preload module that fails to import without a word,
    # and forking a process with a thread running is unsafe: both would go unnoticed otherwise.
    env = os.environ | {"AIRFLOW_HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *TASK_PRELOAD],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "1 ['MainThread']"
