-- Production feature store on RisingWave: the same tables the PostgreSQL sink writes, ingested straight
-- from the Kafka topics (JSON of the pydantic models). With this in place, run every process with
-- CRYPTOPREDICT_STORE__DIALECT=risingwave (which turns the Faust worker's sink off,
-- CRYPTOPREDICT_STORE__SINK_ENABLED=false). Replace the broker address and the topic prefix as deployed.
-- Needs RisingWave 2.5 or newer (the dashboards' named WINDOW clauses).
--
-- FORMAT PLAIN with a PRIMARY KEY: a record whose key columns match a stored row overwrites it (a candle
-- sent again after a restart), as the PostgreSQL sink's upserts do. Not FORMAT UPSERT: that keys rows by
-- the Kafka message key (INCLUDE KEY), and our records are keyed by market only, for partitioning.
--
-- `exchange` (migration 0010): the venue of a market's row, first in each key that holds the pair. Every
-- record carries it now. One written before venues existed has none, and RisingWave does not fill a
-- column's DEFAULT in for a missing field (risingwavelabs/risingwave#17374): its row comes in with a NULL
-- exchange, which no query selects. Such rows are Kraken's; where topics still hold those records, move
-- them once they are in (the same for technical_indicators, predictions and drift_reports):
--   INSERT INTO candles SELECT COALESCE(exchange, 'kraken'), pair, ... FROM candles WHERE exchange IS NULL;
--   DELETE FROM candles WHERE exchange IS NULL;
-- A deployment made before 0010: a primary key cannot be altered, so candles, technical_indicators and
-- predictions are created again (they read their topics from the start); drift_reports takes
-- ALTER TABLE ... ADD COLUMN exchange VARCHAR.
--
-- What runs against this store (tests/unit/test_risingwave_sql.py parses all of it in sqlglot's
-- RisingWave dialect, and this file too):
-- - reads, the same SQL as on PostgreSQL: training and the drift check (cryptopredict/store/candles.py,
--   news.py, inputs.py: plain SELECT ... WHERE exchange = ? AND pair = ? AND interval_s = ?
--   ORDER BY window_start),
--   serving (sentiment of the prediction agent, ledger figures of GetLedger and the drift check,
--   store/ledger.py), `cryptopredict report` (store/report.py) and the Grafana dashboards' queries of
--   datasource cryptopredict-features (infra/grafana/generate.py);
-- - writes through SQL, each with a RisingWave path chosen by store.dialect (no INSERT ... ON CONFLICT,
--   no SELECT ... FOR UPDATE): the news flow's de-duplicated news items (the stored ids read first, the
--   others inserted, each with its news_scoring row), its sentiment scores and dead letters (plain
--   inserts), the scoring outbox finished by an UPDATE by key, and the interval adaptation
--   of the prediction agent (its row read, then inserted whole over itself). Each sets RW_IMPLICIT_FLUSH,
--   so a write is visible to the next read as on PostgreSQL;
-- - PostgreSQL only, never run here: the Alembic migrations (this file stands for them: do not point
--   `cryptopredict migrate`, `cryptopredict load` or the sink at RisingWave), the sink's upserts of
--   candles, indicators, predictions and dead letters, and the drift monitor's upsert of drift_reports
--   (RisingWave ingests those topics instead).
--
-- Not executed in this repository's tests: no RisingWave build can be installed here (see the issue note).

CREATE TABLE IF NOT EXISTS candles (
    exchange VARCHAR,
    pair VARCHAR,
    interval_s INT,
    window_start TIMESTAMPTZ,
    window_end TIMESTAMPTZ,
    open DOUBLE PRECISION,
    high DOUBLE PRECISION,
    low DOUBLE PRECISION,
    close DOUBLE PRECISION,
    volume DOUBLE PRECISION,
    vwap DOUBLE PRECISION,
    trade_count INT,
    first_trade_id BIGINT,
    last_trade_id BIGINT,
    gap BOOLEAN,
    written_at TIMESTAMPTZ AS proctime(),
    PRIMARY KEY (exchange, pair, interval_s, window_start)
) WITH (
    connector = 'kafka',
    topic = 'candles',
    properties.bootstrap.server = 'kafka:9092',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

CREATE TABLE IF NOT EXISTS technical_indicators (
    exchange VARCHAR,
    pair VARCHAR,
    interval_s INT,
    window_start TIMESTAMPTZ,
    "values" JSONB,
    warm_up BOOLEAN,
    written_at TIMESTAMPTZ AS proctime(),
    PRIMARY KEY (exchange, pair, interval_s, window_start)
) WITH (
    connector = 'kafka',
    topic = 'technical_indicators',
    properties.bootstrap.server = 'kafka:9092',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

CREATE TABLE IF NOT EXISTS dead_letters (
    source VARCHAR,
    reason VARCHAR,
    raw VARCHAR,
    at TIMESTAMPTZ
) WITH (
    connector = 'kafka',
    topic = 'dead_letters',
    properties.bootstrap.server = 'kafka:9092',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

-- News items (topic `news`, keyed by news id) and the per-coin sentiment scores (topic `news_sentiment`).
CREATE TABLE IF NOT EXISTS news_items (
    id VARCHAR,
    title VARCHAR,
    summary VARCHAR,
    url VARCHAR,
    source VARCHAR,
    published_at TIMESTAMPTZ,
    ingested_at TIMESTAMPTZ,
    currencies VARCHAR[],
    PRIMARY KEY (id)
) WITH (
    connector = 'kafka',
    topic = 'news',
    properties.bootstrap.server = 'kafka:9092',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

CREATE TABLE IF NOT EXISTS sentiment_scores (
    news_id VARCHAR,
    coin VARCHAR,
    model VARCHAR,
    prompt_version VARCHAR,
    score SMALLINT,
    confidence DOUBLE PRECISION,
    reason VARCHAR,
    scored_at TIMESTAMPTZ,
    PRIMARY KEY (news_id, coin, model, prompt_version)
) WITH (
    connector = 'kafka',
    topic = 'news_sentiment',
    properties.bootstrap.server = 'kafka:9092',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

-- Predictions (topic `predictions`). The uncertainty columns are those of migration 0007: `quantiles` keeps
-- the topic's JSON list of {"level", "price"} as it is.
CREATE TABLE IF NOT EXISTS predictions (
    exchange VARCHAR,
    pair VARCHAR,
    interval_s INT,
    horizon_s INT,
    feature_time TIMESTAMPTZ,
    model_name VARCHAR,
    model_version VARCHAR,
    made_at TIMESTAMPTZ,
    target_time TIMESTAMPTZ,
    last_price DOUBLE PRECISION,
    predicted_price DOUBLE PRECISION,
    lower_price DOUBLE PRECISION,
    upper_price DOUBLE PRECISION,
    written_at TIMESTAMPTZ AS proctime(),
    interval_level DOUBLE PRECISION,
    quantiles JSONB,
    predicted_volatility DOUBLE PRECISION,
    volatility_regime VARCHAR,
    PRIMARY KEY (exchange, pair, interval_s, horizon_s, feature_time, model_name, model_version)
) WITH (
    connector = 'kafka',
    topic = 'predictions',
    properties.bootstrap.server = 'kafka:9092',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

-- Drift checks (migration 0005): the drift monitor publishes each as a DriftRecord on topic `drift_reports`.
CREATE TABLE IF NOT EXISTS drift_reports (
    workflow_id VARCHAR,
    run_id VARCHAR,
    exchange VARCHAR,
    pair VARCHAR,
    interval_s INT,
    horizon_candles INT,
    checked_at TIMESTAMPTZ,
    model_name VARCHAR,
    model_version VARCHAR,
    model_kind VARCHAR,
    reference_source VARCHAR,
    reference_start TIMESTAMPTZ,
    reference_end TIMESTAMPTZ,
    reference_rows INT,
    recent_start TIMESTAMPTZ,
    recent_end TIMESTAMPTZ,
    recent_rows INT,
    psi_threshold DOUBLE PRECISION,
    max_psi DOUBLE PRECISION,
    max_psi_feature VARCHAR,
    psi JSONB,
    live_outcomes INT,
    live_skill DOUBLE PRECISION,
    breached BOOLEAN,
    reasons VARCHAR[],
    retrain_action VARCHAR,
    retrain_workflow_id VARCHAR,
    retrain_run_id VARCHAR,
    written_at TIMESTAMPTZ AS proctime(),
    PRIMARY KEY (workflow_id, run_id)
) WITH (
    connector = 'kafka',
    topic = 'drift_reports',
    properties.bootstrap.server = 'kafka:9092',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

-- The news scoring outbox (migration 0009): written by the news flow beside each new item, finished
-- (an UPDATE by key) once the item is scored or dead-lettered. Not fed by a topic.
CREATE TABLE IF NOT EXISTS news_scoring (
    news_id VARCHAR,
    ingested_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    outcome VARCHAR,
    PRIMARY KEY (news_id)
);

-- Adaptive conformal inference per model version (migration 0008), written by the prediction agent
-- through SQL only. RisingWave has no SELECT ... FOR UPDATE: cryptopredict.store.adaptation locks the row
-- on PostgreSQL; here it inserts the whole new state over the row (the default ON CONFLICT OVERWRITE),
-- computed from the state it read, so two workers never count an outcome twice in it.
CREATE TABLE IF NOT EXISTS interval_adaptation (
    model_name VARCHAR,
    model_version VARCHAR,
    alpha DOUBLE PRECISION,
    outcomes BIGINT,
    misses BIGINT,
    through TIMESTAMPTZ,
    updated_at TIMESTAMPTZ,
    PRIMARY KEY (model_name, model_version)
);

-- The outcome ledger (migration 0010 creates the same as a view on PostgreSQL): a prediction joined with
-- the close of its own venue's candle at its target time. A deployment made before drops this view first
-- and creates it again (IF NOT EXISTS keeps an old one as it is).
CREATE MATERIALIZED VIEW IF NOT EXISTS prediction_outcomes AS
SELECT
    p.exchange, p.pair, p.interval_s, p.horizon_s, p.feature_time, p.target_time, p.model_name,
    p.model_version, p.made_at, p.last_price, p.predicted_price, p.lower_price, p.upper_price,
    p.interval_level, p.quantiles, p.predicted_volatility, p.volatility_regime,
    c.close AS realised_price,
    abs(p.predicted_price - c.close) AS abs_error,
    abs(p.last_price - c.close) AS persistence_abs_error,
    CASE WHEN p.lower_price IS NULL OR p.upper_price IS NULL THEN NULL
         ELSE (c.close BETWEEN p.lower_price AND p.upper_price) END AS inside_interval
FROM predictions p
JOIN candles c
  ON c.exchange = p.exchange AND c.pair = p.pair AND c.interval_s = p.interval_s
 AND c.window_end = p.target_time;
