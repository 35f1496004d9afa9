"""Fixtures the monitoring tests share."""

import pytest


@pytest.fixture
def delayed(make_settings):
    base = make_settings()
    return lambda **kw: make_settings(
        dataset={**base.dataset.model_dump(mode="json"), "labels": "delayed"},
        monitoring={"html_reports": False, "cooldown_minutes": 0, **kw},
    )
