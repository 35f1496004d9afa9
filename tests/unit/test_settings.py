import subprocess
import sys

import pytest

from ctrain.settings import load_settings


def test_defaults_run_the_demo_with_nothing_configured(home):
    s = load_settings()
    assert s.model_name == "ctrain-demo"
    assert s.root == home.resolve()
    assert s.resolved_tracking_uri == f"sqlite:///{home.resolve()}/mlflow/mlflow.db"
    assert "region" in s.dataset.categorical and "tenure_months" in s.dataset.numeric


def test_environment_overrides_the_yaml_including_nested_values(home, monkeypatch):
    monkeypatch.setenv("CTRAIN_MODEL_NAME", "churn")
    monkeypatch.setenv("CTRAIN_PROMOTION__MODE", "dry_run")
    s = load_settings()
    assert s.model_name == "churn"
    assert s.promotion.mode == "dry_run"


def test_loading_settings_creates_nothing(home):
    load_settings()
    assert not home.exists()


def test_importing_the_package_sets_no_tracking_uri_and_creates_no_folder(tmp_path):
    code = (
        "import os, ctrain.settings, ctrain.steps, ctrain.cli;"
        "assert 'mlflow' not in __import__('sys').modules, 'mlflow imported at import time';"
        "print(sorted(os.listdir('.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_name: [unclosed", "not valid YAML"),
        ("- a list", "must hold a mapping"),
        ("dataset: {features: []}\ntraining: {candidates: []}", "at least one feature"),
        ("promotion: {mode: sometimes}", "mode"),
    ],
)
def test_bad_project_file_names_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_settings(path)
    assert str(path) in str(err.value)


def test_slice_columns_must_be_categorical_features(make_settings):
    with pytest.raises(ValueError, match="slice_columns"):
        make_settings(promotion={"slice_columns": ["tenure_months"]})
