"""Grafana dashboards as code (grafana-foundation-sdk), written to infra/grafana/dashboards/*.json.

    .venv/bin/python infra/grafana/generate.py          # rewrite the JSON (commit it)
    .venv/bin/python infra/grafana/generate.py --check  # exit 1 when the committed JSON is stale

Datasources have fixed uids, provisioned by provisioning/datasources/datasources.yml:
- `cryptopredict-features`: the feature store (PostgreSQL here; RisingWave in production speaks the same
  protocol and SQL, so the same datasource type serves it),
- `cryptopredict-mlflow`: MLflow's PostgreSQL database (registry: versions, their tags and aliases),
- `cryptopredict-prometheus`: the Prometheus of `cryptopredict stack up`.

Every SQL query is a `Sql` below, defined once with the columns it must return; the tests execute each
one (Grafana macros substituted) against the stack's PostgreSQL after seeding it. Macros used:
$__timeFilter(expr), $__timeFrom(), $__timeTo() and template variables as ${name:sqlstring} (quoted
text, cast where a number is needed) or ${window:raw} (a custom variable of integers). Every PromQL
expression uses only the variables $__rate_interval, $__interval and $__range.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"

POSTGRES_TYPE = "grafana-postgresql-datasource"
FEATURES = dm.DataSourceRef(type_val=POSTGRES_TYPE, uid="cryptopredict-features")
MLFLOW = dm.DataSourceRef(type_val=POSTGRES_TYPE, uid="cryptopredict-mlflow")
PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="cryptopredict-prometheus")

DASHED = {"fill": "dash", "dash": [4, 4]}
THRESHOLD_LINE = common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)

# Column kinds the tests check values against: time (timestamp), number, text, bool.
Columns = dict[str, str]


@dataclass(frozen=True)
class Sql:
    """One SQL query of a panel, a variable or an annotation, with the columns it returns."""

    sql: str
    columns: Columns
    datasource: dm.DataSourceRef = FEATURES
    # time_series: Grafana turns the `time` column and numbers into series (a `metric` column names them).
    format: str = "time_series"


# Every Sql the dashboards use, by the name tests report; filled by `sql()`.
SQL_QUERIES: dict[str, Sql] = {}


def sql(name: str, query: str, columns: Columns, **kwargs: Any) -> Sql:
    if name in SQL_QUERIES:
        raise ValueError(f"duplicate SQL query name {name}")
    spec = Sql(sql=query.strip(), columns=columns, **kwargs)
    SQL_QUERIES[name] = spec
    return spec


class SqlTarget(cogvariants.Dataquery):
    """A raw-SQL query of Grafana's PostgreSQL datasource (the SDK has no builder for it)."""

    def __init__(self, spec: Sql, ref_id: str) -> None:
        self.spec = spec
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": self.spec.datasource,
            "editorMode": "code",
            "format": self.spec.format,
            "rawQuery": True,
            "rawSql": self.spec.sql,
            "refId": self.ref_id,
        }


class SqlQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, spec: Sql, ref_id: str = "A") -> None:
        self._target = SqlTarget(spec, ref_id)

    def build(self) -> cogvariants.Dataquery:
        return self._target


class SqlAnnotationTarget:
    """The `target` of a SQL annotation as Grafana 10+ saves it (columns time, text, tags)."""

    def __init__(self, spec: Sql) -> None:
        self.spec = spec

    def to_json(self) -> dict[str, object]:
        return {
            "editorMode": "code",
            "format": "table",
            "rawQuery": True,
            "rawSql": self.spec.sql,
            "refId": "Anno",
            "limit": 100,
            "matchAny": False,
            "tags": [],
            "type": "dashboard",
        }


class SqlAnnotation(cogbuilder.Builder[dm.AnnotationQuery]):
    def __init__(self, name: str, spec: Sql, color: str) -> None:
        self._query = (
            dash.AnnotationQuery()
            .name(name)
            .datasource(spec.datasource)
            .enable(True)
            .icon_color(color)
            .build()
        )
        self._query.target = SqlAnnotationTarget(spec)  # type: ignore[assignment]

    def build(self) -> dm.AnnotationQuery:
        return self._query


def promql(
    expr: str, legend: str = "__auto", ref_id: str = "A", instant: bool = False
) -> prometheus.Dataquery:
    query = (
        prometheus.Dataquery()
        .expr(" ".join(expr.split()))
        .legend_format(legend)
        .ref_id(ref_id)
        .datasource(PROMETHEUS)
        .editor_mode(pm.QueryEditorMode.CODE)
    )
    return query.instant() if instant else query.range()


@dataclass
class Layout:
    """Places panels left to right in rows of 24 grid units."""

    x: int = 0
    y: int = 0
    row_height: int = 0
    panels: list[Any] = field(default_factory=list)

    def add(self, panel: Any, w: int = 12, h: int = 8) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel.grid_pos(dm.GridPos(h=h, w=w, x=self.x, y=self.y))
        self.x += w
        self.row_height = max(self.row_height, h)
        self.panels.append(panel)

    def row(self, title: str) -> None:
        self.x, self.y = 0, self.y + self.row_height
        self.panels.append(dash.Row(title).grid_pos(dm.GridPos(h=1, w=24, x=0, y=self.y)))
        self.y, self.row_height = self.y + 1, 0


def with_layout(board: dash.Dashboard, layout: Layout) -> dash.Dashboard:
    for panel in layout.panels:
        if isinstance(panel, dash.Row):
            board.with_row(panel)
        else:
            board.with_panel(panel.datasource(panel_datasource(panel)))
    return board


def panel_datasource(panel: Any) -> dm.DataSourceRef:
    """The one datasource of a panel's queries (Grafana runs a panel's queries on the panel's)."""
    refs = {
        (ref.type_val, ref.uid): ref
        for query in panel.build().targets
        for ref in [query.spec.datasource if isinstance(query, SqlTarget) else query.datasource]
    }
    if len(refs) != 1:
        raise ValueError(f"panel {panel.build().title!r} mixes datasources {sorted(refs)}")
    return next(iter(refs.values()))


def ts(title: str, description: str, unit: str = "short") -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .line_width(1)
        .fill_opacity(0)
        .span_nulls(True)
    )


def sql_variable(name: str, label: str, spec: Sql) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(spec.datasource)
        .query(spec.sql)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.NUMERICAL_ASC)
    )


def base(uid: str, title: str, description: str, tags: Iterable[str]) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["cryptopredict", *tags])
        .timezone("utc")
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .editable()
    )


# --- Predictions ------------------------------------------------------------------------------------

# A market is a venue (`exchange`, Kraken unless chosen) and a pair on it.
MARKET = "exchange = ${exchange:sqlstring} AND pair = ${pair:sqlstring}"
PREDICTION_KEY = (
    f"{MARKET} AND interval_s = ${{interval_s:sqlstring}}::int AND horizon_s = ${{horizon_s:sqlstring}}::int"
)
# The rolling figures: over the outcome at each target time and the ${window} before it, in the range.
ROLLING_WINDOW = "WINDOW w AS (ORDER BY target_time ROWS BETWEEN ${window:raw} PRECEDING AND CURRENT ROW)"
# The coverage intervals are calibrated to (settings.model.interval_coverage's default), drawn as a line.
NOMINAL_COVERAGE = 0.8

# The venue every panel shows; Kraken, the only one before venues existed, when nothing is chosen.
DEFAULT_EXCHANGE = "kraken"
EXCHANGES = sql(
    "variable exchange",
    "SELECT DISTINCT exchange FROM predictions ORDER BY exchange",
    {"exchange": "text"},
    format="table",
)
PAIRS = sql(
    "variable pair",
    "SELECT DISTINCT pair FROM predictions WHERE exchange = ${exchange:sqlstring} ORDER BY pair",
    {"pair": "text"},
    format="table",
)
INTERVALS = sql(
    "variable interval_s",
    f"SELECT DISTINCT interval_s FROM predictions WHERE {MARKET} ORDER BY interval_s",
    {"interval_s": "number"},
    format="table",
)
HORIZONS = sql(
    "variable horizon_s",
    f"""
SELECT DISTINCT horizon_s FROM predictions
WHERE {MARKET} AND interval_s = ${{interval_s:sqlstring}}::int
ORDER BY horizon_s
""",
    {"horizon_s": "number"},
    format="table",
)
PREDICTED = sql(
    "predictions: predicted price and interval",
    f"""
SELECT target_time AS "time", predicted_price AS predicted, lower_price AS lower, upper_price AS upper
FROM predictions
WHERE {PREDICTION_KEY} AND $__timeFilter(target_time)
ORDER BY target_time
""",
    {"time": "time", "predicted": "number", "lower": "number", "upper": "number"},
)
REALISED = sql(
    "predictions: realised close",
    f"""
SELECT window_end AS "time", close AS realised
FROM candles
WHERE {MARKET} AND interval_s = ${{interval_s:sqlstring}}::int AND $__timeFilter(window_end)
ORDER BY window_end
""",
    {"time": "time", "realised": "number"},
)


def threshold_at(value: float, below: str, above: str) -> dash.ThresholdsConfig:
    """One absolute threshold: `below` under `value`, `above` from it on (drawn as THRESHOLD_LINE)."""
    return (
        dash.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=None, color=below), dm.Threshold(value=value, color=above)])
    )


def rolling_sql(title: str, selected: str, columns: Columns) -> Sql:
    """A figure over the last $window outcomes at each target time (window `w`: ROLLING_WINDOW)."""
    return sql(
        title,
        f"""
SELECT target_time AS "time",
       {selected}
FROM prediction_outcomes
WHERE {PREDICTION_KEY} AND $__timeFilter(target_time)
{ROLLING_WINDOW}
ORDER BY target_time
""",
        {"time": "time", **columns},
    )


ROLLING_MAE = rolling_sql(
    "predictions: rolling MAE",
    """avg(abs_error) OVER w AS model_mae,
       avg(persistence_abs_error) OVER w AS persistence_mae""",
    {"model_mae": "number", "persistence_mae": "number"},
)
ROLLING_SKILL = rolling_sql(
    "predictions: rolling skill",
    "1 - sum(abs_error) OVER w / NULLIF(sum(persistence_abs_error) OVER w, 0) AS skill",
    {"skill": "number"},
)
ROLLING_COVERAGE = rolling_sql(
    "predictions: rolling interval coverage",
    "avg(CASE WHEN inside_interval THEN 1.0 WHEN NOT inside_interval THEN 0.0 END) OVER w AS coverage",
    {"coverage": "number"},
)
# One series per volatility regime, each over its own last $window outcomes; "none" is the predictions made
# without the volatility inputs (their interval is the constant-width one).
COVERAGE_BY_REGIME = sql(
    "predictions: rolling interval coverage by volatility regime",
    f"""
SELECT target_time AS "time", coalesce(volatility_regime, 'none') AS metric,
       avg(CASE WHEN inside_interval THEN 1.0 ELSE 0.0 END) OVER (
           PARTITION BY coalesce(volatility_regime, 'none') ORDER BY target_time
           ROWS BETWEEN ${{window:raw}} PRECEDING AND CURRENT ROW
       ) AS coverage
FROM prediction_outcomes
WHERE {PREDICTION_KEY} AND $__timeFilter(target_time) AND inside_interval IS NOT NULL
ORDER BY target_time
""",
    {"time": "time", "metric": "text", "coverage": "number"},
)
# The level each interval was drawn at: adaptive conformal inference moves it off the nominal one when
# the intervals cover too often or too seldom.
INTERVAL_LEVEL = sql(
    "predictions: interval level",
    f"""
SELECT target_time AS "time", interval_level AS "interval level"
FROM predictions
WHERE {PREDICTION_KEY} AND $__timeFilter(target_time)
ORDER BY target_time
""",
    {"time": "time", "interval level": "number"},
)
PREDICTED_VOLATILITY = sql(
    "predictions: predicted volatility",
    f"""
SELECT target_time AS "time", predicted_volatility AS "predicted volatility"
FROM predictions
WHERE {PREDICTION_KEY} AND $__timeFilter(target_time)
ORDER BY target_time
""",
    {"time": "time", "predicted volatility": "number"},
)
PER_VERSION = sql(
    "predictions: live figures per model version",
    f"""
SELECT model_name AS model, model_version AS version, count(*) AS outcomes,
       min(made_at) AS first_prediction, max(made_at) AS last_prediction,
       avg(abs_error) AS live_mae, avg(persistence_abs_error) AS persistence_mae,
       1 - avg(abs_error) / NULLIF(avg(persistence_abs_error), 0) AS skill,
       avg(CASE WHEN inside_interval THEN 1.0 WHEN NOT inside_interval THEN 0.0 END) AS interval_coverage
FROM prediction_outcomes
WHERE {PREDICTION_KEY} AND $__timeFilter(target_time)
GROUP BY model_name, model_version
ORDER BY min(made_at)
""",
    {
        "model": "text",
        "version": "text",
        "outcomes": "number",
        "first_prediction": "time",
        "last_prediction": "time",
        "live_mae": "number",
        "persistence_mae": "number",
        "skill": "number",
        "interval_coverage": "number",
    },
    format="table",
)
# The promotions as serving saw them: a version's first prediction is its first candle after the
# promotion's model event reached the prediction agent. From the feature store alone, so it works on
# RisingWave and needs no registry access (the registry's promoted_at is on the Training dashboard).
FIRST_SERVED = sql(
    "predictions annotation: a version starts serving",
    f"""
SELECT min(made_at) AS "time",
       model_name || ' v' || model_version || ' starts serving' AS text,
       'model,' || model_name AS tags
FROM predictions
WHERE {PREDICTION_KEY}
GROUP BY model_name, model_version
HAVING $__timeFilter(min(made_at))
ORDER BY 1
""",
    {"time": "time", "text": "text", "tags": "text"},
    format="table",
)


def predictions_dashboard() -> dash.Dashboard:
    layout = Layout()
    band = (
        ts(
            "Predicted vs realised price",
            "The prediction for each target time (the close `horizon` candles after the feature candle) "
            "with its calibrated interval, and the realised close. Markers: a model version starts serving.",
            unit="currencyUSD",
        )
        .with_target(SqlQuery(PREDICTED, "A"))
        .with_target(SqlQuery(REALISED, "B"))
        .override_by_name(
            "upper",
            [
                dm.DynamicConfigValue(id_val="custom.fillBelowTo", value="lower"),
                dm.DynamicConfigValue(id_val="custom.fillOpacity", value=15),
                dm.DynamicConfigValue(id_val="custom.lineStyle", value=DASHED),
            ],
        )
        .override_by_name("lower", [dm.DynamicConfigValue(id_val="custom.lineStyle", value=DASHED)])
        .override_by_name("realised", [dm.DynamicConfigValue(id_val="custom.lineWidth", value=2)])
    )
    layout.add(band, w=24, h=10)
    layout.add(
        ts(
            "Rolling MAE: model vs persistence",
            "Mean absolute error of the served predictions over the last $window outcomes, and that of "
            "persistence (the last close) over the same targets. Below persistence is better.",
            unit="currencyUSD",
        ).with_target(SqlQuery(ROLLING_MAE)),
        w=12,
    )
    layout.add(
        ts(
            "Rolling skill vs persistence",
            "1 - MAE / MAE of persistence over the last $window outcomes: above 0 the model beats "
            "'the price stays where it is'.",
            unit="percentunit",
        )
        .with_target(SqlQuery(ROLLING_SKILL))
        .thresholds(threshold_at(0.0, "red", "green"))
        .thresholds_style(THRESHOLD_LINE),
        w=6,
    )
    layout.add(
        ts(
            "Rolling interval coverage",
            "Share of realised prices inside the prediction interval over the last $window outcomes "
            f"(nominal: {NOMINAL_COVERAGE:.0%}).",
            unit="percentunit",
        )
        .with_target(SqlQuery(ROLLING_COVERAGE))
        .min(0)
        .max(1)
        .thresholds(threshold_at(NOMINAL_COVERAGE, "orange", "green"))
        .thresholds_style(THRESHOLD_LINE),
        w=6,
    )
    layout.add(
        ts(
            "Interval coverage by volatility regime",
            "Share of realised prices inside the interval over the last $window outcomes of each volatility "
            "regime the forecast was made in (calm, mid, wild; none: made without the volatility inputs), "
            f"against the nominal {NOMINAL_COVERAGE:.0%} (line). Dashed: the level the intervals were drawn "
            "at, which adaptive conformal inference moves while coverage strays from nominal.",
            unit="percentunit",
        )
        .with_target(SqlQuery(COVERAGE_BY_REGIME, "A"))
        .with_target(SqlQuery(INTERVAL_LEVEL, "B"))
        .override_by_name("interval level", [dm.DynamicConfigValue(id_val="custom.lineStyle", value=DASHED)])
        .min(0)
        .max(1)
        .thresholds(threshold_at(NOMINAL_COVERAGE, "orange", "green"))
        .thresholds_style(THRESHOLD_LINE),
        w=12,
    )
    layout.add(
        ts(
            "Predicted volatility",
            "The volatility forecast of each prediction: mean absolute log return per candle over the "
            "horizon, which scales the interval (a regime is the third of trailing volatility it falls in).",
            unit="percentunit",
        ).with_target(SqlQuery(PREDICTED_VOLATILITY)),
        w=12,
    )
    layout.add(
        table.Panel()
        .title("Live figures per model version")
        .description(
            "Per version over the predictions whose target time is in the range: outcomes, live MAE, "
            "persistence MAE, skill and interval coverage (what GetLedger returns)."
        )
        .with_target(SqlQuery(PER_VERSION)),
        w=24,
        h=7,
    )
    window = (
        dash.CustomVariable("window")
        .label("rolling window (outcomes)")
        .values("30,60,240,1440")
        .current(dm.VariableOption(selected=True, text="60", value="60"))
    )
    board = (
        base(
            "cryptopredict-predictions",
            "cryptopredict / Predictions",
            "How good are the served forecasts? Predicted vs realised price with the interval band, "
            "rolling MAE against persistence, skill and interval coverage, per model version.",
            ["predictions"],
        )
        .with_variable(
            sql_variable("exchange", "exchange", EXCHANGES).current(
                dm.VariableOption(selected=True, text=DEFAULT_EXCHANGE, value=DEFAULT_EXCHANGE)
            )
        )
        .with_variable(sql_variable("pair", "pair", PAIRS))
        .with_variable(sql_variable("interval_s", "interval (s)", INTERVALS))
        .with_variable(sql_variable("horizon_s", "horizon (s)", HORIZONS))
        .with_variable(window)
        .annotation(SqlAnnotation("Model version starts serving", FIRST_SERVED, "purple"))
    )
    return with_layout(board, layout)


# --- Pipeline ---------------------------------------------------------------------------------------

DEAD_LETTERS_RECENT = sql(
    "pipeline: recent dead letters",
    """
SELECT at AS "time", source, reason, left(raw, 300) AS raw
FROM dead_letters
WHERE $__timeFilter(at)
ORDER BY at DESC
LIMIT 200
""",
    {"time": "time", "source": "text", "reason": "text", "raw": "text"},
    format="table",
)


def pipeline_dashboard() -> dash.Dashboard:
    layout = Layout()
    layout.row("Feed")
    layout.add(
        ts(
            "Trades per second", "Trades the feed publishes to the trades topic, per pair.", "ops"
        ).with_target(
            promql("sum by (pair) (rate(cryptopredict_feed_trades_total[$__rate_interval]))", "{{pair}}")
        ),
        w=8,
    )
    layout.add(
        ts(
            "Seconds since the newest trade",
            "Wall clock minus the exchange time of the newest trade published, per pair (alert FeedSilent).",
            "s",
        ).with_target(
            promql(
                "time() - max by (pair) (cryptopredict_feed_last_trade_timestamp_seconds)",
                "{{pair}}",
            )
        ),
        w=8,
    )
    layout.add(
        ts(
            "Feed reconnects and events",
            "Reconnects and the feed client's events per second, by kind.",
            "ops",
        )
        .with_target(
            promql("sum(rate(cryptopredict_feed_reconnects_total[$__rate_interval]))", "reconnects", "A")
        )
        .with_target(
            promql(
                "sum by (event) (rate(cryptopredict_feed_events_total[$__rate_interval]))",
                "{{event}}",
                "B",
            )
        ),
        w=8,
    )
    layout.row("Stream processing")
    layout.add(
        ts(
            "Consumer lag",
            "Records behind the end of each topic, per consumer group (alert ConsumerLagGrowing).",
        ).with_target(
            promql("sum by (group, topic) (cryptopredict_kafka_consumer_lag)", "{{group}} {{topic}}")
        ),
        w=12,
    )
    layout.add(
        ts(
            "Candle close delay",
            "Wall-clock time from a window's end to its candle's publication (grace period included), "
            "p50 and p95 per interval.",
            "s",
        )
        .with_target(
            promql(
                "histogram_quantile(0.5, sum by (le, interval_s) "
                "(rate(cryptopredict_candle_close_delay_seconds_bucket[$__rate_interval])))",
                "p50 {{interval_s}}s",
                "A",
            )
        )
        .with_target(
            promql(
                "histogram_quantile(0.95, sum by (le, interval_s) "
                "(rate(cryptopredict_candle_close_delay_seconds_bucket[$__rate_interval])))",
                "p95 {{interval_s}}s",
                "B",
            )
        ),
        w=12,
    )
    layout.add(
        ts("Candles closed per minute", "Closed candles published, per pair and interval.").with_target(
            promql(
                "sum by (pair, interval_s) (rate(cryptopredict_candles_closed_total[$__rate_interval])) * 60",
                "{{pair}} {{interval_s}}s",
            )
        ),
        w=12,
    )
    layout.add(
        ts(
            "Indicator latency (p95)", "Time to update a pair's indicators from one closed candle.", "s"
        ).with_target(
            promql(
                "histogram_quantile(0.95, sum by (le, interval_s) "
                "(rate(cryptopredict_indicator_latency_seconds_bucket[$__rate_interval])))",
                "{{interval_s}}s",
            )
        ),
        w=12,
    )
    layout.row("Dead letters")
    layout.add(
        ts(
            "Dead letters per minute",
            "Inputs rejected by each stage, by kind of reason (alert DeadLettersRising).",
        ).with_target(
            promql(
                "sum by (source, reason) (rate(cryptopredict_dead_letters_total[$__rate_interval])) * 60",
                "{{source}}: {{reason}}",
            )
        ),
        w=12,
    )
    layout.add(
        table.Panel()
        .title("Recent dead letters")
        .description("The newest rejected inputs in the store's dead_letters table, with the full reason.")
        .with_target(SqlQuery(DEAD_LETTERS_RECENT)),
        w=12,
    )
    layout.row("Serving")
    layout.add(
        ts("Predictions and refusals per minute", "Per pair and horizon; refusals by kind of reason.")
        .with_target(
            promql(
                "sum by (pair, horizon_s) (rate(cryptopredict_predictions_total[$__rate_interval])) * 60",
                "predictions {{pair}} {{horizon_s}}s",
                "A",
            )
        )
        .with_target(
            promql(
                "sum by (reason) (rate(cryptopredict_prediction_refusals_total[$__rate_interval])) * 60",
                "refused: {{reason}}",
                "B",
            )
        ),
        w=8,
    )
    layout.add(
        ts(
            "gRPC latency (p95)", "Unary RPC latency in the server by method and status code.", "s"
        ).with_target(
            promql(
                "histogram_quantile(0.95, sum by (le, method, code) "
                "(rate(cryptopredict_grpc_request_duration_seconds_bucket[$__rate_interval])))",
                "{{method}} {{code}}",
            )
        ),
        w=8,
    )
    layout.add(
        ts(
            "gRPC streams",
            "Prediction streams open now, and predictions dropped for slow readers per minute.",
        )
        .with_target(promql("sum(cryptopredict_grpc_active_streams)", "open streams", "A"))
        .with_target(
            promql(
                "sum(rate(cryptopredict_grpc_dropped_predictions_total[$__rate_interval])) * 60",
                "dropped per minute",
                "B",
            )
        ),
        w=8,
    )
    layout.add(
        stat.Panel()
        .title("Metrics endpoints up")
        .description(
            "1 when Prometheus scrapes the process's /metrics (jobs feed, stream, worker, grpc, edge; the edge is optional)."
        )
        .with_target(promql('up{job=~"feed|stream|worker|grpc|edge"}', "{{job}}", instant=True)),
        w=24,
        h=4,
    )
    board = base(
        "cryptopredict-pipeline",
        "cryptopredict / Pipeline",
        "Is data flowing? Trades per second, consumer lag, candle close delay, dead letters, reconnects "
        "and the serving side.",
        ["pipeline"],
    )
    return with_layout(board, layout)


# --- LLM and news -----------------------------------------------------------------------------------

NEWS_INGESTED = sql(
    "news: items ingested per hour",
    """
SELECT date_trunc('hour', ingested_at) AS "time", count(*) AS ingested
FROM news_items
WHERE $__timeFilter(ingested_at)
GROUP BY 1
ORDER BY 1
""",
    {"time": "time", "ingested": "number"},
)
NEWS_SCORED = sql(
    "news: items scored per hour",
    """
SELECT date_trunc('hour', scored_at) AS "time", count(DISTINCT news_id) AS scored
FROM sentiment_scores
WHERE $__timeFilter(scored_at)
GROUP BY 1
ORDER BY 1
""",
    {"time": "time", "scored": "number"},
)
NEWS_FAILED = sql(
    "news: items failed per hour",
    """
SELECT date_trunc('hour', at) AS "time",
       count(*) FILTER (WHERE source = 'sentiment') AS failed_scoring,
       count(*) FILTER (WHERE source LIKE 'news:%') AS malformed_items
FROM dead_letters
WHERE (source = 'sentiment' OR source LIKE 'news:%') AND $__timeFilter(at)
GROUP BY 1
ORDER BY 1
""",
    {"time": "time", "failed_scoring": "number", "malformed_items": "number"},
)
SENTIMENT_PER_COIN = sql(
    "news: sentiment per coin per hour",
    """
SELECT date_trunc('hour', scored_at) AS "time", coin AS metric,
       sum(score * confidence) / NULLIF(sum(confidence), 0) AS sentiment
FROM sentiment_scores
WHERE $__timeFilter(scored_at)
GROUP BY 1, 2
ORDER BY 1, 2
""",
    {"time": "time", "metric": "text", "sentiment": "number"},
)
LATEST_SCORES = sql(
    "news: latest scored headlines",
    """
SELECT s.scored_at AS "time", s.coin, s.score, s.confidence, n.title, s.reason, n.source, s.model
FROM sentiment_scores s
JOIN news_items n ON n.id = s.news_id
WHERE $__timeFilter(s.scored_at)
ORDER BY s.scored_at DESC
LIMIT 100
""",
    {
        "time": "time",
        "coin": "text",
        "score": "number",
        "confidence": "number",
        "title": "text",
        "reason": "text",
        "source": "text",
        "model": "text",
    },
    format="table",
)


def llm_dashboard() -> dash.Dashboard:
    layout = Layout()
    layout.add(
        ts(
            "News items per hour: ingested, scored, failed",
            "New items stored (news_items), items scored (sentiment_scores), and dead letters: items the "
            "LLM could not score (source sentiment) and malformed feed items (source news:<feed>).",
        )
        .with_target(SqlQuery(NEWS_INGESTED, "A"))
        .with_target(SqlQuery(NEWS_SCORED, "B"))
        .with_target(SqlQuery(NEWS_FAILED, "C"))
        .draw_style(common.GraphDrawStyle.BARS),
        w=12,
    )
    layout.add(
        ts(
            "Sentiment per coin",
            "Confidence-weighted mean score (-1 bearish .. +1 bullish) of the headlines scored each hour.",
        )
        .with_target(SqlQuery(SENTIMENT_PER_COIN))
        .min(-1)
        .max(1),
        w=12,
    )
    layout.add(
        ts(
            "LLM calls per minute by outcome",
            "Calls of the sentiment activity to the model server by outcome: ok, unavailable, invalid_output "
            "(failed validation) or refused (alert LlmFailing).",
        ).with_target(
            promql(
                "sum by (outcome) (rate(cryptopredict_llm_calls_total[$__rate_interval])) * 60", "{{outcome}}"
            )
        ),
        w=8,
    )
    layout.add(
        ts("LLM latency", "p50 and p95 of one LLM call.", "s")
        .with_target(
            promql(
                "histogram_quantile(0.5, sum by (le) "
                "(rate(cryptopredict_llm_latency_seconds_bucket[$__rate_interval])))",
                "p50",
                "A",
            )
        )
        .with_target(
            promql(
                "histogram_quantile(0.95, sum by (le) "
                "(rate(cryptopredict_llm_latency_seconds_bucket[$__rate_interval])))",
                "p95",
                "B",
            )
        ),
        w=8,
    )
    layout.add(
        ts(
            "News workflows per hour",
            "NewsIngestWorkflow and SentimentWorkflow completions and failures (Temporal SDK metrics).",
        )
        .with_target(
            promql(
                'sum by (workflow_type) (increase(temporal_workflow_completed{workflow_type=~"News.*|Sentiment.*"}'
                "[$__rate_interval]))",
                "{{workflow_type}} completed",
                "A",
            )
        )
        .with_target(
            promql(
                'sum by (workflow_type) (increase(temporal_workflow_failed{workflow_type=~"News.*|Sentiment.*"}'
                "[$__rate_interval]))",
                "{{workflow_type}} failed",
                "B",
            )
        ),
        w=8,
    )
    layout.add(
        table.Panel()
        .title("Latest scored headlines")
        .description("What the model said about each headline, with its reason.")
        .with_target(SqlQuery(LATEST_SCORES)),
        w=24,
        h=9,
    )
    board = base(
        "cryptopredict-llm-news",
        "cryptopredict / LLM and news",
        "Is news flowing and is the LLM scoring it? Items ingested, scored and failed, LLM latency and "
        "outcomes, sentiment per coin over time.",
        ["news", "llm"],
    )
    return with_layout(board, layout)


# --- Training ---------------------------------------------------------------------------------------

# MLflow's registry keeps what the gate decided as version tags (cryptopredict.ml.registry): kind,
# promoted_at + promotion_reason, or rejection_reasons (JSON list), and test_<metric>.
VERSION_TAG = "max(t.value) FILTER (WHERE t.key = '{key}')"
DECISIONS = sql(
    "training: decisions and reasons",
    f"""
SELECT to_timestamp(v.creation_time / 1000.0) AS "time", v.name AS model, v.version::text AS version,
       {VERSION_TAG.format(key="kind")} AS kind,
       CASE WHEN {VERSION_TAG.format(key="promoted_at")} IS NOT NULL THEN 'promoted'
            WHEN {VERSION_TAG.format(key="rejection_reasons")} IS NOT NULL THEN 'kept champion'
            ELSE 'registered' END AS decision,
       coalesce({VERSION_TAG.format(key="promotion_reason")},
                {VERSION_TAG.format(key="rejection_reasons")}, '') AS reasons,
       ({VERSION_TAG.format(key="test_skill_vs_persistence")})::float8 AS test_skill,
       ({VERSION_TAG.format(key="test_mae")})::float8 AS test_mae,
       ({VERSION_TAG.format(key="test_interval_coverage")})::float8 AS test_coverage
FROM model_versions v
LEFT JOIN model_version_tags t ON t.name = v.name AND t.version = v.version
WHERE $__timeFilter(to_timestamp(v.creation_time / 1000.0))
GROUP BY v.name, v.version, v.creation_time
ORDER BY v.creation_time DESC
""",
    {
        "time": "time",
        "model": "text",
        "version": "text",
        "kind": "text",
        "decision": "text",
        "reasons": "text",
        "test_skill": "number",
        "test_mae": "number",
        "test_coverage": "number",
    },
    datasource=MLFLOW,
    format="table",
)
CHAMPIONS = sql(
    "training: champion history",
    """
SELECT p.value::timestamptz AS "time", p.name AS model, p.version::text AS version,
       coalesce(k.value, '') AS kind, coalesce(r.value, '') AS reason,
       (a.version IS NOT NULL) AS champion_now,
       b.value::timestamptz AS rolled_back_at
FROM model_version_tags p
LEFT JOIN model_version_tags k ON k.name = p.name AND k.version = p.version AND k.key = 'kind'
LEFT JOIN model_version_tags r ON r.name = p.name AND r.version = p.version AND r.key = 'promotion_reason'
LEFT JOIN model_version_tags b ON b.name = p.name AND b.version = p.version AND b.key = 'rolled_back_at'
LEFT JOIN registered_model_aliases a ON a.name = p.name AND a.version = p.version AND a.alias = 'champion'
WHERE p.key = 'promoted_at' AND $__timeFilter(p.value::timestamptz)
ORDER BY 1 DESC
""",
    {
        "time": "time",
        "model": "text",
        "version": "text",
        "kind": "text",
        "reason": "text",
        "champion_now": "bool",
        "rolled_back_at": "time",
    },
    datasource=MLFLOW,
    format="table",
)
RUNS = sql(
    "training: MLflow runs per hour",
    """
SELECT date_trunc('hour', to_timestamp(r.start_time / 1000.0)) AS "time", r.status AS metric,
       count(*) AS runs
FROM runs r
JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE e.name = 'cryptopredict-training' AND r.lifecycle_stage = 'active'
  AND $__timeFilter(to_timestamp(r.start_time / 1000.0))
GROUP BY 1, 2
ORDER BY 1, 2
""",
    {"time": "time", "metric": "text", "runs": "number"},
    datasource=MLFLOW,
)
PROMOTED = sql(
    "training annotation: promotions",
    """
SELECT p.value::timestamptz AS "time",
       p.name || ' v' || p.version || ' promoted: ' || coalesce(r.value, '') AS text,
       'promotion,' || p.name AS tags
FROM model_version_tags p
LEFT JOIN model_version_tags r ON r.name = p.name AND r.version = p.version AND r.key = 'promotion_reason'
WHERE p.key = 'promoted_at' AND $__timeFilter(p.value::timestamptz)
ORDER BY 1
""",
    {"time": "time", "text": "text", "tags": "text"},
    datasource=MLFLOW,
    format="table",
)


def training_dashboard() -> dash.Dashboard:
    layout = Layout()
    layout.add(
        stat.Panel()
        .title("Decisions in the range")
        .description("Gate decisions of TrainingWorkflow runs counted by the worker (promoted or kept).")
        .with_target(
            promql(
                "sum by (decision) (increase(cryptopredict_model_decisions_total[$__range]))",
                "{{decision}}",
                instant=True,
            )
        ),
        w=8,
        h=6,
    )
    layout.add(
        ts("Training runs per hour", "MLflow runs of experiment cryptopredict-training, by status.")
        .with_target(SqlQuery(RUNS))
        .draw_style(common.GraphDrawStyle.BARS),
        w=8,
        h=6,
    )
    layout.add(
        ts(
            "Training workflows",
            "Workflow starts by type (ours) and TrainingWorkflow completions and failures (Temporal SDK).",
        )
        .with_target(
            promql(
                "sum by (workflow_type) (increase(cryptopredict_workflow_starts_total[$__rate_interval]))",
                "{{workflow_type}} started",
                "A",
            )
        )
        .with_target(
            promql(
                'sum(increase(temporal_workflow_completed{workflow_type="TrainingWorkflow"}[$__rate_interval]))',
                "TrainingWorkflow completed",
                "B",
            )
        )
        .with_target(
            promql(
                'sum(increase(temporal_workflow_failed{workflow_type="TrainingWorkflow"}[$__rate_interval]))',
                "TrainingWorkflow failed",
                "C",
            )
        ),
        w=8,
        h=6,
    )
    layout.add(
        table.Panel()
        .title("Decisions and reasons")
        .description(
            "Every registered version: its kind, the gate's decision and reasons (promotion reason, or why "
            "it stayed challenger), and its test-window figures. From MLflow's registry database."
        )
        .with_target(SqlQuery(DECISIONS)),
        w=24,
        h=9,
    )
    layout.add(
        table.Panel()
        .title("Champion history")
        .description(
            "Each promotion (registry tag promoted_at), its reason, rollbacks, and which is champion now."
        )
        .with_target(SqlQuery(CHAMPIONS)),
        w=14,
        h=8,
    )
    layout.add(
        ts(
            "Version served",
            "Registry version of the champion each prediction agent serves (steps are promotions and rollbacks).",
        )
        .with_target(promql("max by (model) (cryptopredict_serving_model_version)", "{{model}}"))
        .line_interpolation(common.LineInterpolation.STEP_AFTER)
        .decimals(0),
        w=10,
        h=8,
    )
    board = (
        base(
            "cryptopredict-training",
            "cryptopredict / Training",
            "What did retraining do and why? Runs, gate decisions with their reasons, champion history.",
            ["training"],
        )
        .time("now-7d", "now")
        .annotation(SqlAnnotation("Promotions (registry)", PROMOTED, "green"))
    )
    return with_layout(board, layout)


# --- output -----------------------------------------------------------------------------------------


DASHBOARDS = {
    "predictions": predictions_dashboard,
    "pipeline": pipeline_dashboard,
    "llm-news": llm_dashboard,
    "training": training_dashboard,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    out = {}
    for name, build in DASHBOARDS.items():
        model = build().build()
        out[f"{name}.json"] = json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    return out


# --- for the tests: the queries of the generated JSON, with Grafana's substitutions --------------------


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> the committed dashboard JSON."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def sql_in(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, rawSql) of every SQL query of a dashboard: panels, annotations and variables."""
    found = []
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            if "rawSql" in target:
                found.append((f"panel {panel['title']!r} {target['refId']}", target["rawSql"]))
    for annotation in board.get("annotations", {}).get("list", []):
        if "rawSql" in (annotation.get("target") or {}):
            found.append((f"annotation {annotation['name']!r}", annotation["target"]["rawSql"]))
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and variable["datasource"]["type"] == POSTGRES_TYPE:
            found.append((f"variable {variable['name']}", variable["query"]))
    return found


def promql_in(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every PromQL query of a dashboard."""
    return [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in board.get("panels", [])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


_TIME_FILTER = re.compile(r"\$__timeFilter\(((?:[^()]|\([^()]*\))*)\)")
_VARIABLE = re.compile(r"\$\{(\w+):(sqlstring|raw)\}")


def substitute_sql(query: str, start: datetime, end: datetime, variables: dict[str, str]) -> str:
    """What Grafana's PostgreSQL datasource sends for `query` over [start, end] with these variables."""
    lo, hi = (t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (start, end))
    out = _TIME_FILTER.sub(lambda m: f"{m.group(1)} BETWEEN '{lo}' AND '{hi}'", query)
    out = out.replace("$__timeFrom()", f"'{lo}'").replace("$__timeTo()", f"'{hi}'")

    def variable(match: re.Match[str]) -> str:
        value = variables[match.group(1)]
        return "'" + value.replace("'", "''") + "'" if match.group(2) == "sqlstring" else value

    out = _VARIABLE.sub(variable, out)
    if "$" in out:
        raise ValueError(f"unsubstituted Grafana macro or variable in: {out}")
    return out


def substitute_promql(expr: str, step: str = "1m", range_: str = "6h") -> str:
    """`expr` with Grafana's interval variables replaced, as Prometheus receives it."""
    out = expr.replace("$__rate_interval", step).replace("$__interval", step).replace("$__range", range_)
    if "$" in out:
        raise ValueError(f"unsubstituted Grafana variable in: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed dashboard differs")
    args = parser.parse_args(argv)
    rendered = render()
    stale = [
        n
        for n, text in rendered.items()
        if not (DASHBOARDS_DIR / n).is_file() or (DASHBOARDS_DIR / n).read_text() != text
    ]
    if args.check:
        for name in stale:
            print(f"stale: {DASHBOARDS_DIR / name} (run infra/grafana/generate.py)", file=sys.stderr)
        return 1 if stale else 0
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (DASHBOARDS_DIR / name).write_text(text)
    print(f"wrote {len(rendered)} dashboards to {DASHBOARDS_DIR} ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
