"""DAG parse time: each DAG file, three ways, beside a minimal DAG as the floor.

    python bench/parse.py [--repeat 5] [--out FILE.json]

- **fresh interpreter**: a new Python process imports ``airflow.sdk`` and then the file; the
  total, and the file alone (after ``airflow.sdk``);
- **Airflow's DAG processor**: the real ``airflow dag-processor`` on a temporary embedded home
  parses the folder again and again; each parse's duration is what Airflow stores in
  ``dag.last_parse_duration`` (its own measure, the one its UI and metrics show).

``control.py`` is the smallest DAG file there is (one DAG, one task, ``airflow.sdk`` only): what
any DAG file costs on this machine, so the difference is what ctrain's files add.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _stats import stats

REPO = Path(__file__).resolve().parents[1]
SHARED = "ctrain_common.py"  # what the DAG files share; not a DAG file itself

CONTROL_DAG = '''"""The smallest DAG file: the floor for parse time."""

from airflow.sdk import dag, task


@dag(dag_id="control", schedule=None)
def control():
    @task
    def noop() -> None:
        return None

    noop()


control()
'''

# As Airflow's own loaders do, the DAG file's folder is on sys.path (for ctrain_common).
_FRESH = (
    "import time, importlib.util, os, sys\n"
    "sys.path.append(os.path.dirname(sys.argv[1]))\n"
    "t0 = time.perf_counter(); import airflow.sdk; t1 = time.perf_counter()\n"
    "spec = importlib.util.spec_from_file_location('d', sys.argv[1])\n"
    "spec.loader.exec_module(importlib.util.module_from_spec(spec)); t2 = time.perf_counter()\n"
    "print(t2 - t0, t2 - t1)\n"
)


def fresh_interpreter(path: Path, repeat: int, env: dict[str, str]) -> dict[str, Any]:
    total, alone = [], []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", _FRESH, str(path)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        a, b = map(float, out.stdout.split()[-2:])
        total.append(a)
        alone.append(b)
    return {"with_airflow_sdk_import": stats(total), "file_only": stats(alone)}


def dag_processor(folder: Path, home: Path, repeat: int, timeout: float = 600) -> dict[str, Any]:
    """Parse durations recorded by the real DAG processor, ``repeat`` parses per DAG."""
    os.environ["CTRAIN_HOME"] = str(home)
    os.environ["CTRAIN_DAGS_FOLDER"] = str(folder)
    from ctrain.runtime import Services, airflow_bin, airflow_env, migrate, wait_for
    from ctrain.settings import load_settings

    s = load_settings()
    log = home / "logs" / "dag-processor.log"
    migrate(s, log)
    env = airflow_env(s) | {"AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "2"}
    db = s.airflow_home / "airflow.db"
    dag_ids = {p.stem for p in dag_files(folder)}
    seen: dict[str, dict[str, float]] = {d: {} for d in dag_ids}

    def parsed_enough() -> bool:
        if db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                rows = con.execute(
                    "select dag_id, last_parsed_time, last_parse_duration from dag"
                ).fetchall()
            for dag_id, parsed_at, duration in rows:
                if dag_id in seen and duration is not None:
                    seen[dag_id][parsed_at] = duration
        return all(len(v) >= repeat for v in seen.values())

    with Services(env) as processor:
        processor.start([airflow_bin(), "dag-processor"], log)
        wait_for(
            "the DAG processor to parse every file", parsed_enough, timeout, 0.5, processor.alive
        )
    # The first parse of each file is the warm-up (cold page cache, the DAG created in the DB).
    return {d: stats([x for _, x in sorted(parses.items())][1:]) for d, parses in seen.items()}


def dag_files(folder: Path) -> list[Path]:
    """The DAG files of ``folder``: its Python files but the shared module the DAGs import."""
    return sorted(p for p in folder.glob("*.py") if p.name != SHARED)


def measure(repeat: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="ctrain-bench-parse-"))
    folder = home / "dags"
    folder.mkdir()
    for path in [*(REPO / "dags").glob("*.py"), REPO / "dags" / ".airflowignore"]:
        (folder / path.name).symlink_to(path)
    (folder / "control.py").write_text(CONTROL_DAG)
    # Airflow puts its plugins folder on sys.path; the DAGs import the landing watcher from it.
    path = os.pathsep.join(filter(None, [str(REPO / "plugins"), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ) | {"AIRFLOW_HOME": str(home / "airflow-fresh"), "PYTHONPATH": path}
    fresh = {p.stem: fresh_interpreter(p, repeat, env) for p in dag_files(folder)}
    processor = dag_processor(folder, home, repeat + 1)
    return {name: fresh[name] | {"dag_processor": processor[name]} for name in sorted(fresh)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    result = measure(args.repeat)
    for name, r in result.items():
        print(
            f"{name:<20} fresh {r['with_airflow_sdk_import']['median']:.3f} s"
            f"  file alone {r['file_only']['median']:.3f} s"
            f"  DAG processor {r['dag_processor']['median']:.3f} s"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
