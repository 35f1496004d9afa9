"""The training configuration in force: the project's candidates, or one promoted configuration.

``training.tuning: open`` (the default) grid-searches the project's ``training.candidates``.
``restricted`` is for an environment that trains on its own data but may not choose how (prod,
"promote code, not models"): its runs train only the configuration another environment's
version won with (estimator and every hyperparameter, no grid), promoted into it by
``ctrain env promote-config`` and kept on its registered model, so every worker of the
environment reads the same one.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from ctrain.settings import CandidateSpec, Settings

# On a training run: the configuration that won it, as a candidate with no grid left.
CANDIDATE_TAG = "ctrain_candidate"
# On an environment's registered model: the one configuration its restricted runs train, and
# where it came from.
CONFIG_TAG = "ctrain_training_config"
CONFIG_FROM_TAG = "ctrain_training_config_from"


class NoConfigPromoted(Exception):
    """Tuning is restricted here and no configuration was promoted into this environment."""


def winning_spec(candidate: CandidateSpec, best_params: dict[str, Any]) -> CandidateSpec:
    """``candidate`` with the grid's chosen values fixed: what a restricted run trains again."""
    chosen = {k.removeprefix("model__"): v for k, v in best_params.items()}
    return CandidateSpec(
        name=candidate.name,
        estimator=candidate.estimator,
        params={**candidate.params, **chosen},
    )


def spec_from_json(text: str, where: str) -> CandidateSpec:
    """A candidate from its JSON, checked as the project file's candidates are (an estimator
    ctrain trains, no unknown key).

    Raises:
        ValueError: not JSON, or not a candidate ctrain trains; the message names ``where``.
    """
    try:
        spec = CandidateSpec.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ValueError(f"{where}: not a training configuration ctrain trains: {first}") from None
    if spec.grid:
        raise ValueError(f"{where}: a promoted configuration has no grid left to search")
    return spec


def promoted_config(client, model_name: str) -> tuple[CandidateSpec, str] | None:
    """The configuration promoted into this environment and where it came from, or None."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(model_name).tags
    except MlflowException:
        return None
    if CONFIG_TAG not in tags:
        return None
    where = f"registered model {model_name}, tag {CONFIG_TAG}"
    return spec_from_json(tags[CONFIG_TAG], where), tags.get(CONFIG_FROM_TAG, "")


def in_force(settings: Settings, client) -> Settings:
    """``settings`` as a training run uses them: unchanged with open tuning; with restricted
    tuning, the promoted configuration as the only candidate.

    Raises:
        NoConfigPromoted: tuning is restricted and nothing was promoted here.
    """
    if settings.training.tuning == "open":
        return settings
    found = promoted_config(client, settings.model_name)
    if found is None:
        here = settings.environment or "this environment"
        raise NoConfigPromoted(
            f"training.tuning is restricted in {here} and no training configuration has been "
            f"promoted into it ({settings.model_name} has no {CONFIG_TAG} tag): promote one "
            "with `ctrain env promote-config --from ENV --version N`"
        )
    training = settings.training.model_copy(update={"candidates": [found[0]]})
    return settings.model_copy(update={"training": training})
