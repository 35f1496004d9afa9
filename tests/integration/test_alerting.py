"""deploy/prometheus as Prometheus reads it: promtool checks the scrape config and the alert
rules, and runs the rules' unit tests (each alert fires on the series that should fire it, at the
time it should, with the text an on-call engineer reads, and not on the others). A real
Prometheus scraping ctrain is in tests/integration/embedded/test_stream_e2e.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from tests_support import PROMETHEUS_DIR, promtool

from ctrain.telemetry import scrape_token, scrape_token_matches


def test_the_alert_rules_are_valid_and_fire_when_they_should():
    checked = promtool("check", "rules", "alerts.yml")
    assert "SUCCESS: 6 rules found" in checked, checked
    tested = promtool("test", "rules", "alerts_test.yml")
    assert "SUCCESS" in tested and "FAILED" not in tested, tested
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    # Every alert but the scrape's own is unit-tested, firing and not.
    for rule in rules:
        if rule["alert"] != "CtrainMetricsDown":
            assert tests.count(f"alertname: {rule['alert']}") >= 2, rule["alert"]


def test_the_scrape_config_is_valid_with_its_token_file(tmp_path):
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (ctrain,) = [j for j in config["scrape_configs"] if j["job_name"] == "ctrain"]
    assert ctrain["metrics_path"] == "/ctrain/metrics"
    assert ctrain["authorization"]["type"] == "Bearer"  # a token file, never a token inline
    assert set(ctrain["authorization"]) == {"type", "credentials_file"}
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    ctrain["authorization"]["credentials_file"] = str(token)
    config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert "is valid prometheus config file syntax" in out, out
    # And without the token file it is not: a stack started without it says so at once.
    token.unlink()
    with pytest.raises(subprocess.CalledProcessError) as failed:
        promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert "credentials" in failed.value.stdout + failed.value.stderr


def test_the_scrape_token_comes_from_a_variable_or_a_mounted_file(tmp_path):
    assert scrape_token({}) is None
    assert not scrape_token_matches("Bearer anything", {})  # no token set: nothing matches
    env = {"CTRAIN_METRICS_TOKEN": "s3cret"}
    assert scrape_token_matches("Bearer s3cret", env)
    for wrong in (None, "", "s3cret", "Bearer s3cre", "Bearer s3cret ", "Basic s3cret"):
        assert not scrape_token_matches(wrong, env), wrong
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    env = {"CTRAIN_METRICS_TOKEN": "s3cret", "CTRAIN_METRICS_TOKEN_FILE": str(secret)}
    assert scrape_token(env) == "from-file"  # the mounted secret wins
    assert scrape_token_matches("Bearer from-file", env)
    assert not scrape_token_matches("Bearer s3cret", env)
    assert shutil.which("promtool")
