"""``ctrain new-project``: a project file for a user's own columns that ctrain runs as written."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ctrain.scaffold import CannotDescribe, describe
from ctrain.settings import load_settings


def _sample(rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    salary = rng.normal(50_000, 12_000, rows)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(rows)],
            "ts": pd.date_range("2026-01-01", periods=rows, freq="min", tz="UTC"),
            "salary": salary,
            "age": rng.integers(18, 80, rows),
            "segment": rng.choice(["retail", "sme", "corporate"], rows),
            "score": np.where(rng.random(rows) < 0.1, np.nan, rng.random(rows)),
            "churned": (salary < 40_000).astype(int),
        }
    )


def _ctrain(*args, env=None):
    return subprocess.run(
        [str(Path(sys.executable).with_name("ctrain")), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_the_written_project_describes_the_sample_and_loads(tmp_path, home):
    sample = tmp_path / "sample.csv"
    _sample().to_csv(sample, index=False)
    out = tmp_path / "churn.yaml"
    run = _ctrain(
        "new-project", str(sample), "--target", "churned", "--id-column", "customer_id",
        "--time-column", "ts", "--model-name", "churn", "-o", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}: 4 features (salary, age, segment, score)" in run.stdout

    settings = load_settings(out)
    spec = settings.dataset
    assert (spec.target, spec.id_column, spec.event_time_column) == ("churned", "customer_id", "ts")
    assert spec.numeric == ["salary", "age", "score"] and spec.categorical == ["segment"]
    assert [f.name for f in spec.features if f.nullable] == ["score"]
    assert spec.classes == [0, 1] and spec.positive_class == 1  # the rarer class
    assert settings.promotion.slice_columns == [] and spec.expectations == []
    assert settings.model_name == "churn"
    # The review list is in the file, for the person who opens it.
    assert "promotion.slice_columns" in out.read_text().split("model_name:")[0]

    again = _ctrain(
        "new-project", str(sample), "--target", "churned", "--id-column", "customer_id",
        "--time-column", "ts", "--model-name", "churn", "-o", str(out),
    )  # fmt: skip
    assert again.returncode == 1 and "exists; pass --force" in again.stderr


def test_the_written_project_trains_on_the_users_columns(tmp_path, home, monkeypatch):
    from ctrain.scaffold import write_project

    sample = _sample(1200)
    path = write_project(
        describe(
            sample, target="churned", id_column="customer_id", event_time_column="ts",
            model_name="churn",
        ),
        tmp_path / "churn.yaml",
        tmp_path / "sample.parquet",
    )  # fmt: skip
    monkeypatch.setenv("CTRAIN_PROJECT", str(path))
    settings = load_settings(path)
    settings.landing_dir.mkdir(parents=True)
    sample.to_parquet(settings.landing_dir / "b1.parquet")
    env = {**__import__("os").environ, "CTRAIN_PROJECT": str(path)}
    assert _ctrain("ingest", env=env).returncode == 0
    run = _ctrain("train", env=env)
    assert run.returncode == 0, run.stderr
    assert "promoted" in run.stdout, run.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": "churn"}, "no target 'churn'"),
        ({"event_time_column": "salary_ts"}, "no event time column 'salary_ts'"),
        ({"event_time_column": "segment"}, "holds no readable times"),
        ({"target": "segment"}, "must have two classes"),
    ],
)
def test_a_sample_that_cannot_be_described_says_why(change, message):
    kwargs = {"target": "churned", "id_column": "customer_id", "event_time_column": "ts"} | change
    with pytest.raises(CannotDescribe, match=message):
        describe(_sample(), model_name="m", **kwargs)


def test_describe_names_no_demo_column():
    project = describe(
        _sample(), target="churned", id_column="customer_id", event_time_column="ts",
        model_name="m",
    )  # fmt: skip
    text = yaml.safe_dump(project)
    for demo_column in ("region", "discount_rate", "support_calls", "tenure_months"):
        assert demo_column not in text
