"""The library's boundary: no module of ctrain imports Airflow, except ``ctrain.orchestration``."""

import pkgutil
import subprocess
import sys

import ctrain

_IMPORT_AND_LIST_AIRFLOW = (
    "import importlib, sys\n"
    "for name in sys.argv[1:]:\n"
    "    importlib.import_module(name)\n"
    "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
)


def test_no_module_of_the_library_imports_airflow(tmp_path):
    modules = [
        m.name
        for m in pkgutil.walk_packages(ctrain.__path__, "ctrain.")
        if m.name != "ctrain.orchestration"
    ]
    assert "ctrain.steps" in modules and "ctrain.runtime" in modules
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_AND_LIST_AIRFLOW, *modules],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
