"""Grafana dashboards as code: the committed JSON is what infra/grafana/generate.py writes, every SQL
query in it is one of the generator's `Sql` specs (the integration test runs those on real data), and
every panel reads one of the provisioned datasources."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
import yaml

pytestmark = pytest.mark.unit

GRAFANA = Path(__file__).resolve().parents[2] / "infra" / "grafana"
# The stream edge (Go) writes its own series, outside the Python catalogue.
EDGE_METRICS = GRAFANA.parent / "stream-edge" / "metrics.go"


def test_regenerating_the_dashboards_changes_nothing(generate: ModuleType) -> None:
    rendered = generate.render()
    committed = {path.name: path.read_text() for path in (GRAFANA / "dashboards").glob("*.json")}
    assert set(rendered) == set(committed), "run .venv/bin/python infra/grafana/generate.py"
    for name, text in rendered.items():
        assert text == committed[name], f"{name} is stale: run .venv/bin/python infra/grafana/generate.py"
    assert generate.render() == rendered  # deterministic within a run too


def test_every_sql_query_is_a_spec_with_its_columns(generate: ModuleType) -> None:
    specs = {spec.sql: name for name, spec in generate.SQL_QUERIES.items()}
    used = set()
    for file, board in generate.load_dashboards().items():
        for where, raw_sql in generate.sql_in(board):
            assert raw_sql in specs, f"{file} {where}: SQL not defined as a generate.Sql"
            used.add(specs[raw_sql])
    assert used == set(generate.SQL_QUERIES), "specs no dashboard uses"
    for name, spec in generate.SQL_QUERIES.items():
        assert spec.columns and set(spec.columns.values()) <= {"time", "number", "text", "bool"}, name
        if spec.format == "time_series":
            assert "time" in spec.columns, f"{name}: a time series needs a time column"


def test_every_feature_store_query_of_a_pair_selects_its_venue_kraken_by_default(
    generate: ModuleType,
) -> None:
    # The same pair trades on several venues: a query by pair alone would mix their rows.
    pair_keyed = [
        name
        for name, spec in generate.SQL_QUERIES.items()
        if spec.datasource.uid == "cryptopredict-features" and "${pair:sqlstring}" in spec.sql
    ]
    assert pair_keyed
    for name in pair_keyed:
        assert "exchange = ${exchange:sqlstring}" in generate.SQL_QUERIES[name].sql, name
    (exchange,) = [
        v
        for v in generate.load_dashboards()["predictions.json"]["templating"]["list"]
        if v["name"] == "exchange"
    ]
    assert exchange["current"]["value"] == "kraken"


def test_every_panel_reads_a_provisioned_datasource(generate: ModuleType) -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text())
    by_uid = {ds["uid"]: ds["type"] for ds in provisioned["datasources"]}
    boards = generate.load_dashboards()
    assert set(boards) == {"predictions.json", "pipeline.json", "llm-news.json", "training.json"}
    uids = set()
    for file, board in boards.items():
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            ref = panel["datasource"]
            assert by_uid.get(ref["uid"]) == ref["type"], f"{file} {panel['title']}: {ref}"
            assert panel["targets"], f"{file} {panel['title']}: no queries"
            for target in panel["targets"]:
                assert target["datasource"] == ref
            uids.add(ref["uid"])
    assert uids == set(by_uid)
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    assert providers["providers"][0]["type"] == "file"


def test_macro_substitution(generate: ModuleType) -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    query = "SELECT 1 WHERE $__timeFilter(min(t)) AND p = ${pair:sqlstring} AND n > ${window:raw}"
    assert generate.substitute_sql(query, start, end, {"pair": "O'B", "window": "5"}) == (
        "SELECT 1 WHERE min(t) BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-02T00:00:00Z' "
        "AND p = 'O''B' AND n > 5"
    )
    with pytest.raises(ValueError, match="unsubstituted"):
        generate.substitute_sql("SELECT $__timeGroup(t, 1m)", start, end, {})
    assert generate.substitute_promql("rate(x[$__rate_interval])") == "rate(x[1m])"


def exposed_names() -> set[str]:
    """Every series name our processes expose, from the catalogue in cryptopredict.metrics."""
    from prometheus_client import REGISTRY

    from cryptopredict import metrics
    from workflows.interceptors import WORKFLOW_STARTS

    names = {WORKFLOW_STARTS, metrics.LLM_CALLS, metrics.MODEL_DECISIONS}
    names |= {f"{metrics.LLM_LATENCY}_{suffix}" for suffix in ("bucket", "count", "sum")}
    for family in REGISTRY.collect():
        if not family.name.startswith(metrics.NAMESPACE):
            continue
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
        else:
            names.add(family.name)
    return names | edge_names()


def edge_names() -> set[str]:
    """The series the stream edge writes (infra/stream-edge/metrics.go), a histogram's with its suffixes."""
    names = set(re.findall(r"\bcryptopredict_edge_[a-z_]+", EDGE_METRICS.read_text()))
    assert "cryptopredict_edge_kafka_connected" in names
    return names | {f"{n}_{suffix}" for n in names for suffix in ("bucket", "count", "sum")}


def test_every_series_in_dashboards_and_rules_is_in_the_metrics_catalogue(generate: ModuleType) -> None:
    exprs = [
        (f"{file} {where}", expr)
        for file, board in generate.load_dashboards().items()
        for where, expr in generate.promql_in(board)
    ]
    rules = yaml.safe_load((GRAFANA.parent / "prometheus" / "rules" / "cryptopredict.yml").read_text())
    exprs += [(f"rule {r['alert']}", r["expr"]) for group in rules["groups"] for r in group["rules"]]
    known = exposed_names()
    # The SDK's own workflow metrics (by workflow_type) are not in our catalogue.
    known |= {"temporal_workflow_completed", "temporal_workflow_failed"}

    def unknown_in(expr: str) -> set[str]:
        return set(re.findall(r"\b(?:cryptopredict|temporal)_\w+", expr)) - known

    assert unknown_in("cryptopredict_live_skill_vs_persistence < 0 or cryptopredict_feed_messages_total") == {
        "cryptopredict_feed_messages_total"
    }
    unknown = {where: names for where, expr in exprs if (names := unknown_in(expr))}
    assert not unknown, "series not in cryptopredict/metrics.py"
    assert len(exprs) > 25
