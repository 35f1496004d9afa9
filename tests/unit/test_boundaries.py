"""What importing ctrain brings into a process: no Airflow, and a preload that is safe to fork."""

import json
import os
import pkgutil
import subprocess
import sys

import ctrain
from ctrain.runtime import TASK_PRELOAD

_IMPORT_AND_REPORT = (
    "import importlib, json, sys, threading\n"
    "for name in sys.argv[1:]:\n"
    "    importlib.import_module(name)\n"
    "print(json.dumps({\n"
    "    'threads': sorted(t.name for t in threading.enumerate()),\n"
    "    'airflow': sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')),\n"
    "}))\n"
)


def fresh_import(modules: list[str], airflow_home) -> dict:
    """Import ``modules`` in a new interpreter; its threads and Airflow modules afterwards."""
    env = os.environ | {"AIRFLOW_HOME": str(airflow_home), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_AND_REPORT, *modules],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_module_of_the_library_imports_airflow_but_orchestration(tmp_path):
    modules = [
        m.name
        for m in pkgutil.walk_packages(ctrain.__path__, "ctrain.")
        if m.name != "ctrain.orchestration"
    ]
    assert "ctrain.steps" in modules and "ctrain.runtime" in modules
    assert fresh_import(modules, tmp_path)["airflow"] == []


def test_every_preloaded_module_imports_and_none_starts_a_thread(tmp_path):
    # multiprocessing's forkserver skips a preload module that fails to import without a word,
    # and forking a process with a thread running is unsafe: both would go unnoticed otherwise.
    assert fresh_import(list(TASK_PRELOAD), tmp_path)["threads"] == ["MainThread"]
