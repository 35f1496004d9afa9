"""Paths and helpers shared by tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
# What the DAG files share; imported by them, not a DAG file itself (see dags/.airflowignore).
DAG_SHARED = DAGS / "ctrain_common.py"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if p != DAG_SHARED)


def load_dagbag():
    """The DAGs as Airflow's own loaders see them: the folder is on sys.path while they parse."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)


def bootstrap_champion(settings, src, n: int = 3) -> None:
    """Land ``n`` batches with their labels in separate files, ingest them, train the first champion."""
    from ctrain import steps
    from ctrain.records import RunContext

    for i in range(n):
        src.write_batch(i, settings.landing_dir, with_labels=False)
        src.write_labels(i, settings.labels_landing_dir)
    for p in steps.list_landed(settings):
        steps.ingest_one(p, settings)
    steps.ingest_labels(settings)
    steps.run_training(RunContext(run_id="bootstrap"), settings=settings)
