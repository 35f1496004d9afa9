"""The registered model: its aliases, who is champion, and the one place that loads a model.

Training registers versions, promotion moves ``champion``, scoring, the monitor and the
comparison read it; they all name the aliases and load models through here.
"""

from __future__ import annotations

from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"


def aliased_version(client, name: str, alias: str):
    """The ``ModelVersion`` that ``alias`` points at, or None when the alias (or model) is unset."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def current_champion(client, name: str) -> str | None:
    """The version ``champion`` points at right now, or None."""
    mv = aliased_version(client, name, CHAMPION)
    return None if mv is None else str(mv.version)


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def load_model(uri: str) -> Any:
    """Load the scikit-learn model at ``uri`` (``models:/name/version`` or ``runs:/...``)."""
    import mlflow

    return mlflow.sklearn.load_model(uri)
