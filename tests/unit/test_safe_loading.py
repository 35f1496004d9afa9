"""Nothing from the registry runs code: ctrain loads only its own format with its own type list.

The crafted models are real MLflow artifacts in a real (temporary) registry: a cloudpickle file
whose unpickling would run a shell command, and a skops file whose own MLmodel trusts
``os.system``. Each is registered, tagged as if it had passed validation, and then promoted,
loaded and scored the ways an attacker or a careless operator would.
"""

import os
from pathlib import Path

import pytest
import skops.io
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from tests_support import Payload, register_crafted, trained_champion

from ctrain import steps
from ctrain.data.demo_source import DemoSource
from ctrain.model_io import features, target
from ctrain.promotion.decisions import list_decisions
from ctrain.promotion.promote import PromotionRefused, manual_promote, refusal
from ctrain.records import RunContext
from ctrain.registry import (
    CHAMPION,
    REGISTERED_VERSION,
    TRUSTED_TYPES,
    UnsafeModel,
    current_champion,
    load_model,
    version_uri,
)
from ctrain.settings import ALLOWED_ESTIMATORS, CandidateSpec
from ctrain.training.pipeline import build_pipeline


def test_the_trusted_types_are_exactly_what_the_allowed_estimators_need(settings):
    df = DemoSource(batch_rows=400).batch(0)
    X, y = features(df, settings.dataset), target(df, settings.dataset)
    small = {
        "sklearn.ensemble.HistGradientBoostingClassifier": {"max_iter": 3},
        "sklearn.ensemble.RandomForestClassifier": {"n_estimators": 3},
        "sklearn.ensemble.ExtraTreesClassifier": {"n_estimators": 3},
        "sklearn.ensemble.GradientBoostingClassifier": {"n_estimators": 3},
    }
    needed = set()
    for est in ALLOWED_ESTIMATORS:
        cand = CandidateSpec(name="c", estimator=est, params=small.get(est, {}))
        model = build_pipeline(settings.dataset, cand, 0).fit(X, y)
        needed |= set(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    assert needed == set(TRUSTED_TYPES)


def test_an_estimator_outside_the_allow_list_is_refused_when_settings_load(make_settings):
    with pytest.raises(ValueError, match="'os.system' is not an estimator ctrain trains"):
        make_settings(
            training={"candidates": [{"name": "x", "estimator": "os.system", "grid": {}}]}
        )


@pytest.fixture
def champion(settings, client):
    trained_champion(settings)
    assert current_champion(client, settings.model_name) == "1"


def test_a_pickled_model_is_refused_everywhere_and_its_payload_never_runs(
    settings, client, champion, tmp_path
):
    import mlflow

    marker = tmp_path / "pwned"
    version = register_crafted(
        client,
        settings,
        lambda m: m.sklearn.log_model(
            Payload(marker), name="model", serialization_format="cloudpickle"
        ),
    )
    uri = version_uri(settings.model_name, version)
    with pytest.raises(UnsafeModel, match="stored as 'cloudpickle'"):
        load_model(uri)
    # Manual promote: refused, with a record that says why, and the champion stays.
    with pytest.raises(PromotionRefused, match="does not load safely"):
        manual_promote(settings, version, RunContext(trigger_reason="attacker"), client)
    assert current_champion(client, settings.model_name) == "1"
    refused = list_decisions(client, settings, limit=1)[0]
    assert refused.decision == "rejected" and refused.rule == "refused"
    assert "cloudpickle" in refused.reason and not refused.moved
    # Someone moves the alias in MLflow directly: scoring refuses instead of loading it.
    client.set_registered_model_alias(settings.model_name, CHAMPION, version)
    with pytest.raises(UnsafeModel):
        steps.score("batch_0000", settings)
    # And MLflow's own loader is switched off in every process ctrain configures.
    with pytest.raises(mlflow.exceptions.MlflowException, match="PICKLE_DESERIALIZATION"):
        mlflow.sklearn.load_model(uri)
    assert not marker.exists()


def test_a_skops_model_is_judged_by_ctrains_type_list_not_its_own(settings, client, champion):
    df = DemoSource(batch_rows=200).batch(0)
    X = features(df, settings.dataset)[settings.dataset.numeric]
    evil = Pipeline([("run", FunctionTransformer(func=os.system))]).fit(X)
    needed = skops.io.get_untrusted_types(data=skops.io.dumps(evil))
    version = register_crafted(
        client,
        settings,
        lambda m: m.sklearn.log_model(
            evil, name="model", serialization_format="skops", skops_trusted_types=needed
        ),
    )
    uri = version_uri(settings.model_name, version)
    # The artifact's own MLmodel trusts the function; ctrain does not read that list.
    import mlflow
    import yaml

    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    own = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["sklearn"]
    assert any("system" in t for t in own["skops_trusted_types"])
    with pytest.raises(UnsafeModel, match="outside ctrain's trusted list: .*system"):
        load_model(uri)
    with pytest.raises(PromotionRefused, match="does not load safely"):
        manual_promote(settings, version, RunContext(), client)
    assert current_champion(client, settings.model_name) == "1"


def test_a_safe_model_that_ctrain_did_not_train_is_refused(settings, client, champion):
    from sklearn.linear_model import LogisticRegression

    df = DemoSource(batch_rows=200).batch(0)
    X = features(df, settings.dataset)[settings.dataset.numeric].fillna(0)
    plain = LogisticRegression().fit(X, target(df, settings.dataset))

    def log(m):
        return m.sklearn.log_model(plain, name="model", serialization_format="skops")

    import mlflow

    mlflow.set_experiment("somewhere-else")
    with mlflow.start_run():
        info = log(mlflow)
    version = str(mlflow.register_model(info.model_uri, settings.model_name).version)
    client.set_model_version_tag(settings.model_name, version, "validation_status", "passed")
    with pytest.raises(PromotionRefused, match="was not produced by ctrain's training"):
        manual_promote(settings, version, RunContext(), client)
    assert current_champion(client, settings.model_name) == "1"
    assert list_decisions(client, settings, limit=1)[0].rule == "refused"


def test_ctrains_own_model_registered_again_by_hand_is_refused(settings, client, champion):
    """The same run and artifact as v1, registered outside ctrain with a passed tag: the entry is
    not ctrain's, whatever it points at."""
    import mlflow

    v1 = client.get_model_version(settings.model_name, "1")
    again = mlflow.register_model(
        v1.source, settings.model_name, tags={"validation_status": "passed"}
    )
    assert (again.run_id, again.source) == (v1.run_id, v1.source)
    with pytest.raises(
        PromotionRefused, match="registered outside ctrain's training: .* version 1's"
    ):
        manual_promote(settings, str(again.version), RunContext(), client)
    assert current_champion(client, settings.model_name) == "1"
    assert list_decisions(client, settings, limit=1)[0].rule == "refused"
    # ctrain's own v1 stays promotable: the refusal is of the entry, not of the artifact.
    assert refusal(settings, client, "1") is None
    # A run registered before ctrain tagged its runs: its first version is ctrain's.
    client.delete_tag(v1.run_id, REGISTERED_VERSION)
    assert refusal(settings, client, "1") is None
    assert "registered outside" in refusal(settings, client, str(again.version))
