"""The environments the promotion tests pull between."""

from __future__ import annotations

import os

import pytest
from tests_support import env_project, trained_champion

from ctrain.settings import default_project_file, load_settings


@pytest.fixture
def envs(tmp_path, monkeypatch):
    """dev and staging, each with a first champion trained on its own (here: equal) data."""
    for key in [k for k in os.environ if k.startswith("CTRAIN_")]:
        monkeypatch.delenv(key)
    dev = load_settings(env_project(tmp_path, "dev"))
    staging = load_settings(env_project(tmp_path, "staging"))
    for s in (dev, staging):
        # Trained as a project of its own in that home (the store the environment names), so
        # the suite's template of a first champion is copied in rather than trained again.
        trained_champion(load_settings(default_project_file(), home=str(s.root)))
    return dev, staging
