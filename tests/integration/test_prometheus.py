"""Prometheus of the local stack and the PromQL of the project: promtool (installed by `stack up` with
Prometheus, so a missing promtool fails here) accepts the alerting rules and rejects a broken one, the
rules' unit tests pass, every dashboard expression parses, and the running Prometheus answers each
dashboard query and scrapes a job per process endpoint."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import yaml

from cryptopredict.settings import Settings
from cryptopredict.stack import StackPaths
from cryptopredict.stack.prometheus import RULES_DIR, Prometheus

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = RULES_DIR.parent
RULE_FILE = RULES_DIR / "cryptopredict.yml"
GENERATOR = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "generate.py"


@pytest.fixture(scope="module")
def prometheus(settings: Settings) -> Prometheus:
    return Prometheus(settings, StackPaths.from_settings(settings))


@pytest.fixture(scope="module")
def promtool(prometheus: Prometheus) -> Path:
    assert prometheus.promtool.is_file(), f"promtool missing at {prometheus.promtool}: stack up installs it"
    return prometheus.promtool


def run(*cmd: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules(promtool: Path) -> None:
    result = run(promtool, "check", "rules", RULE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    names = [
        rule["alert"] for group in yaml.safe_load(RULE_FILE.read_text())["groups"] for rule in group["rules"]
    ]
    assert names == [
        "FeedSilent",
        "ConsumerLagGrowing",
        "DeadLettersRising",
        "EdgeRefusingRecords",
        "EdgeLostKafka",
        "VenueQuietWhileOnline",
        "VenueCandlesDisagree",
        "LlmFailing",
        "LiveSkillBelowZero",
        "NoModelPromotedForAWeek",
    ]
    for group in yaml.safe_load(RULE_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_promtool_rejects_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    rules = yaml.safe_load(RULE_FILE.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "sum by (pair) (rate(cryptopredict_feed_trades_total[5m])"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", broken)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_rule_unit_tests_pass_and_cover_every_alert(promtool: Path) -> None:
    result = run(promtool, "test", "rules", PROMETHEUS_DIR / "tests.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULE_FILE.read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROMETHEUS_DIR / "tests.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert alerts == tested, f"alerts without a unit test: {sorted(alerts - tested)}"


def dashboard_promql(generate: ModuleType) -> list[tuple[str, str]]:
    return [
        (f"{file} {where}", generate.substitute_promql(expr))
        for file, board in generate.load_dashboards().items()
        for where, expr in generate.promql_in(board)
    ]


def test_every_dashboard_expression_parses(promtool: Path, tmp_path: Path, generate: ModuleType) -> None:
    exprs = dashboard_promql(generate)
    assert len(exprs) >= 20
    # promtool checks expressions in rule files: each one becomes a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [{"record": f"dashboard:expr{i}", "expr": e} for i, (_, e) in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_prometheus_answers_every_dashboard_query(prometheus: Prometheus, generate: ModuleType) -> None:
    failures = {}
    with httpx.Client(base_url=prometheus.endpoint, timeout=10) as http:
        for where, expr in dashboard_promql(generate):
            response = http.get("/api/v1/query", params={"query": expr})
            body = response.json()
            if response.status_code != 200 or body.get("status") != "success":
                failures[where] = body
    assert not failures


def test_prometheus_scrapes_every_process_and_loaded_the_rules(
    prometheus: Prometheus, settings: Settings
) -> None:
    with httpx.Client(base_url=prometheus.endpoint, timeout=10) as http:
        targets = http.get("/api/v1/targets").json()["data"]["activeTargets"]
        groups = http.get("/api/v1/rules").json()["data"]["groups"]
    metrics = settings.metrics
    expected = {("feed", metrics.feed_metrics_port(venue)) for venue in ("kraken", "coinbase", "binance")} | {
        ("stream", metrics.stream_port),
        ("worker", metrics.worker_port),
        ("grpc", metrics.grpc_port),
        ("edge", metrics.edge_port),
    }
    assert {(t["labels"]["job"], t["scrapeUrl"]) for t in targets} == {
        (job, f"http://{metrics.host}:{port}/metrics") for job, port in expected
    }
    alerts = {rule["name"] for group in groups for rule in group["rules"]}
    assert {
        "FeedSilent",
        "NoModelPromotedForAWeek",
        "VenueQuietWhileOnline",
        "VenueCandlesDisagree",
    } <= alerts
