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


def test_the_serve_demos_variables_are_its_settings(home, monkeypatch):
    """`ctrain demo --serve` hands its rollout settings to every process as variables; read
    back, they are ``SERVE_DEMO`` (the end-to-end test of its scenario uses that dict)."""
    from ctrain.demo import SERVE_DEMO, serve_demo_env

    for key, value in serve_demo_env().items():
        monkeypatch.setenv(key, value)
    serving = load_settings().serving
    assert serving.log_window_rows == SERVE_DEMO["log_window_rows"]
    rollout = SERVE_DEMO["rollout"]
    assert serving.rollout.strategy == rollout["strategy"]
    assert list(serving.rollout.canary_steps) == rollout["canary_steps"]
    assert (serving.rollout.step_seconds, serving.rollout.min_rows) == (
        rollout["step_seconds"],
        rollout["min_rows"],
    )


def test_loading_settings_creates_nothing(tmp_path, monkeypatch):
    home = tmp_path / "not-yet"  # the ``home`` fixture's comes with an MLflow store
    monkeypatch.setenv("CTRAIN_HOME", str(home))
    assert load_settings().root == home
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


def test_the_cli_says_an_error_in_one_line(tmp_path, home, monkeypatch, capsys):
    """YAML's own message spans lines (the mark, a caret); the CLI prints one."""
    from ctrain import cli

    path = tmp_path / "bad.yaml"
    path.write_text("model_name: [unclosed\n")
    monkeypatch.setenv("CTRAIN_PROJECT", str(path))
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ctrain status: ValueError: project file {path} is not valid YAML")
    assert err.count("\n") == 1, err


def test_slice_columns_must_be_categorical_features_and_the_error_says_where(make_settings):
    with pytest.raises(ValueError) as err:
        make_settings(promotion={"slice_columns": ["tenure_months"]})
    assert "key promotion.slice_columns: ['tenure_months'] are not categorical features" in str(
        err.value
    )
    assert "project.yaml" in str(err.value) and "slice_columns: []" in str(err.value)


def test_an_expectation_on_a_column_the_dataset_lacks_fails_when_loaded(make_settings):
    dataset = make_settings().dataset.model_dump(mode="json")
    dataset["expectations"].append(
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "salary"}}
    )
    with pytest.raises(ValueError) as err:
        make_settings(dataset=dataset)
    assert "key dataset.expectations.2: expect_column_values_to_not_be_null names ['salary']" in (
        str(err.value)
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dataset": {"positive_class": 7}}, "positive_class 7 is not one of classes"),
        ({"dataset": {"classes": [0, 1, 2]}}, "classes must be two distinct labels"),
        ({"training": {"metric": "roc"}}, "training.metric"),
        ({"promotion": {"metric": "auc"}}, "promotion.metric"),
        ({"promotion": {"floors": {"auroc": 0.6}}}, "promotion.floors"),
        ({"promotion": {"lock_timeout_s": -1}}, "greater than 0"),
        (
            {"training": {"candidates": [{"name": "x", "estimator": "os.system"}]}},
            "'os.system' is not an estimator ctrain trains",
        ),
    ],
)
def test_wrong_values_fail_when_loaded_naming_the_file_and_key(make_settings, override, message):
    base = make_settings().dataset.model_dump(mode="json")
    if "dataset" in override:
        override = {"dataset": base | override["dataset"]}
    with pytest.raises(ValueError, match=message) as err:
        make_settings(**override)
    assert "project file" in str(err.value) and "\n" not in str(err.value)


def test_a_wrong_value_from_the_environment_is_blamed_on_the_variable(home, monkeypatch):
    monkeypatch.setenv("CTRAIN_PROMOTION__LOCK_TIMEOUT_S", "-1")
    with pytest.raises(ValueError, match="environment variable CTRAIN_PROMOTION__LOCK_TIMEOUT_S"):
        load_settings()


def test_an_unknown_ctrain_variable_is_reported_not_ignored(home, monkeypatch, caplog):
    monkeypatch.setenv("CTRAIN_TRAIN_ON_NEW_DAT", "false")  # a typo of TRAIN_ON_NEW_DATA
    monkeypatch.setenv("CTRAIN_PROMOTION__MODE", "dry_run")  # a real one
    s = load_settings()
    assert s.train_on_new_data is True and s.promotion.mode == "dry_run"
    assert "CTRAIN_TRAIN_ON_NEW_DAT is set but names no ctrain setting" in caplog.text
    assert "CTRAIN_PROMOTION__MODE" not in caplog.text


def test_the_variable_a_setting_names_is_not_reported(home, monkeypatch, caplog):
    """The service's token variable is read by ``ctrain serve``: it is no typo."""
    monkeypatch.setenv("CTRAIN_SERVE_TOKEN", "t")
    monkeypatch.setenv("CTRAIN_OTHER_TOKEN", "t")
    load_settings()
    assert "CTRAIN_SERVE_TOKEN" not in caplog.text
    assert "CTRAIN_OTHER_TOKEN is set but names no ctrain setting" in caplog.text
    monkeypatch.setenv("CTRAIN_SERVING__TOKEN_ENV", "CTRAIN_OTHER_TOKEN")
    caplog.clear()
    assert load_settings().serving.token_env == "CTRAIN_OTHER_TOKEN"
    assert "CTRAIN_OTHER_TOKEN" not in caplog.text
    assert "CTRAIN_SERVE_TOKEN is set but names no ctrain setting" in caplog.text


def test_ct_training_refuses_conf_keys_it_does_not_know():
    from ctrain import steps

    params = {"window_batches": 0, "dry_run": False, "force": False, "reason": "r"}
    # What the task sees: Airflow has merged the conf's keys into its params, the typo included.
    merged = params | {"dryrun": True}
    with pytest.raises(steps.UnknownConf, match=r"\['dryrun'\].*'dry_run'"):
        steps.run_context(
            "ct_training", "r1", "manual", merged, {"dryrun": True}, declared=set(params)
        )
    ok = steps.run_context(
        "ct_training",
        "r1",
        "manual",
        params,
        {"reason": "x", "window_batches": 2},
        declared=set(params),
    )
    assert ok["trigger_reason"] == "x" and ok["requested_by"] == ""
    # A person's trigger names them: an approval of theirs on this run is refused.
    mine = steps.run_context(
        "ct_training", "r2", "manual", params, declared=set(params), user="dave"
    )
    assert (mine["started_by"], mine["requested_by"]) == ("dave", "dave")


def test_the_known_expectation_types_are_those_great_expectations_has():
    import great_expectations.expectations as gxe
    from great_expectations.expectations.expectation import Expectation

    from ctrain.settings import GX_EXPECTATION_TYPES

    real = {
        c.expectation_type
        for c in vars(gxe).values()
        if isinstance(c, type) and issubclass(c, Expectation) and c.expectation_type
    }
    assert real == GX_EXPECTATION_TYPES


def test_a_misspelt_expectation_type_fails_when_loaded(make_settings):
    base = make_settings().dataset.model_dump(mode="json")
    wrong = {"type": "expect_column_values_to_be_betwen", "kwargs": {"column": "tenure_months"}}
    with pytest.raises(ValueError, match="'expect_column_values_to_be_betwen' is not a Great"):
        make_settings(dataset=base | {"expectations": [wrong]})


def test_every_known_type_names_a_class_ingest_can_build():
    from ctrain.expectations import _expectation

    e = _expectation(
        "expect_column_kl_divergence_to_be_less_than",
        {"column": "x", "partition_object": None, "threshold": 0.1},
        {},
    )
    assert type(e).__name__ == "ExpectColumnKLDivergenceToBeLessThan"
