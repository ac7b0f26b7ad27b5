"""Settings for every component, read from the environment (prefix ``CRYPTOPREDICT_``, ``__`` nests).

Every endpoint is a setting so the same code runs against a local stack or remote clusters, e.g.
``CRYPTOPREDICT_KAFKA__BOOTSTRAP_SERVERS=broker-1:9092`` or
``CRYPTOPREDICT_TEMPORAL__ADDRESS=temporal.prod:7233``.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from cryptopredict.topics import Exchange, market_key, namespaced_pair

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


class Section(BaseModel):
    """A settings section: a refused value is named, never echoed (it may be a password or a key)."""

    model_config = ConfigDict(hide_input_in_errors=True)


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    # Controller listener of the local single-node KRaft broker.
    controller_port: int = 9093
    partitions: int = 3
    # Prefixed to every topic name and the Faust app id, so isolated runs (demo, tests) share a broker.
    topic_prefix: str = ""
    # Short group timeouts make a Faust worker ready in seconds instead of ~30 s (see ARCHITECTURE).
    rebalance_timeout_s: float = 10.0
    session_timeout_s: float = 10.0
    # Every topic the project makes (its own, Faust's changelogs and repartition topics) gets these.
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int = Field(default=1, ge=1)
    # How every client of the project (Faust, producers, consumers, admin) talks to the brokers.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    # CA bundle the brokers' certificates are checked against (unset: the system's roots).
    ssl_ca_file: Path | None = None
    # Client certificate and key, for brokers that require mutual TLS.
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    sasl_mechanism: Literal["SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @property
    def servers(self) -> list[str]:
        return [server.strip() for server in self.bootstrap_servers.split(",") if server.strip()]

    @property
    def first_host_port(self) -> tuple[str, int]:
        host, _, port = self.servers[0].rpartition(":")
        return host, int(port)

    @property
    def topic_config(self) -> dict[str, str]:
        """Topic-level settings every topic the project creates carries."""
        return {"min.insync.replicas": str(self.min_insync_replicas)}

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"kafka.min_insync_replicas ({self.min_insync_replicas}) is above "
                f"kafka.replication_factor ({self.replication_factor}): no write could ever be acknowledged"
            )
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("set both kafka.ssl_cert_file and kafka.ssl_key_file, or neither")
        if self.security_protocol == "SASL_SSL" and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                "kafka.security_protocol SASL_SSL needs kafka.sasl_username and kafka.sasl_password"
            )
        return self


class PostgresSettings(Section):
    # Feature store. The MLflow backend and the Optuna studies live in databases on the same server,
    # unless `metadata_url` names another.
    url: str = "postgresql://cryptopredict:cryptopredict@127.0.0.1:5433/features"
    # The PostgreSQL server of the MLflow backend and the Optuna studies when the feature store is not a
    # PostgreSQL (store.dialect risingwave: RisingWave cannot hold them); its path is ignored.
    metadata_url: str | None = None
    mlflow_database: str = "mlflow"
    optuna_database: str = "optuna"
    # libpq's sslmode for every connection (feature store, MLflow backend, Optuna); unset: the driver's.
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    # CA bundle the server's certificate is checked against (verify-ca / verify-full).
    ssl_root_cert: Path | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 5432

    @property
    def user(self) -> str:
        return urlsplit(self.url).username or "postgres"

    @property
    def password(self) -> str:
        return urlsplit(self.url).password or ""

    @property
    def database(self) -> str:
        return urlsplit(self.url).path.lstrip("/") or "postgres"

    def url_for(self, database: str, driver: str = "postgresql", server: str | None = None) -> str:
        """A libpq-style URL (psycopg, MLflow, Optuna) for `database` on `server` (default: `url`'s), with
        the TLS settings as query parameters. asyncpg takes TLS as a connect argument instead
        (`asyncpg_connect_args`)."""
        parts = urlsplit(server or self.url)
        query = parts.query
        if "asyncpg" not in driver:
            # The URL's own parameters win: the metadata server may need another CA than the store.
            tls = {"sslmode": self.sslmode, "sslrootcert": self.ssl_root_cert}
            given = parse_qs(query)
            extra = urlencode({k: str(v) for k, v in tls.items() if v is not None and k not in given})
            query = "&".join(q for q in (query, extra) if q)
        return parts._replace(scheme=driver, path=f"/{database}", query=query).geturl()

    @property
    def async_url(self) -> str:
        """SQLAlchemy URL for the asyncpg driver."""
        return self.url_for(self.database, "postgresql+asyncpg")

    def asyncpg_connect_args(self) -> dict[str, Any]:
        """asyncpg's `ssl` argument for sslmode / ssl_root_cert (asyncpg reads no libpq URL parameters)."""
        if self.sslmode is None:
            return {}
        if self.sslmode in ("disable", "allow", "prefer", "require"):
            return {"ssl": self.sslmode}
        import ssl

        context = ssl.create_default_context(
            cafile=str(self.ssl_root_cert) if self.ssl_root_cert is not None else None
        )
        context.check_hostname = self.sslmode == "verify-full"
        return {"ssl": context}

    @property
    def mlflow_backend_uri(self) -> str:
        # MLflow 3 needs an explicit driver; psycopg 3 is installed.
        return self.url_for(self.mlflow_database, "postgresql+psycopg", self.metadata_url)

    @property
    def optuna_storage_url(self) -> str:
        """Optuna's RDB storage: trials of one study can run on several workers at once."""
        return self.url_for(self.optuna_database, "postgresql+psycopg", self.metadata_url)


class StoreSettings(Section):
    # False in the RisingWave mode: RisingWave ingests the topics itself (infra/risingwave/).
    sink_enabled: bool = True
    # What `postgres.url` reaches for the feature store. "risingwave": the writes that still go through
    # SQL (news items, sentiment scores, dead letters of the news flow, interval adaptation) take their
    # RisingWave path (no INSERT ... ON CONFLICT, no row locks), and the sink is off (unset, it turns off;
    # set true, the settings are refused). The SQL of either path: tests/unit/test_risingwave_sql.py.
    dialect: Literal["postgres", "risingwave"] = "postgres"

    @model_validator(mode="after")
    def _risingwave_ingests_the_topics(self) -> StoreSettings:
        if self.dialect == "risingwave":
            if self.sink_enabled and "sink_enabled" in self.model_fields_set:
                raise ValueError(
                    "store.sink_enabled must be false with store.dialect risingwave: RisingWave ingests"
                    " the topics itself, and the sink's upserts and migrations are PostgreSQL's"
                )
            self.sink_enabled = False
        return self


class TemporalSettings(Section):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    ui_port: int = 8233
    training_task_queue: str = "training"
    news_task_queue: str = "news"
    # LLM activities get their own queue, so a worker can cap them (news.llm_concurrency) on their own.
    llm_task_queue: str = "llm"
    # TLS to the frontend: on when `tls` is true, an API key or any of the files is set.
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Name the server's certificate is checked for, when it differs from the address's host.
    tls_server_name: str | None = None
    # Sent as `authorization: Bearer <key>` on every call (Temporal Cloud API keys).
    api_key: SecretStr | None = None
    # Local cluster profile only: the launcher serves `address` with TLS and the API key check, relaying
    # to a dev server it starts at this address.
    relay_upstream: str | None = None

    @property
    def dev_server_address(self) -> str:
        """Where the launcher's dev server listens: behind the relay when there is one."""
        return self.relay_upstream or self.address

    @property
    def uses_tls(self) -> bool:
        # An API key is never sent in plaintext (Temporal Cloud and its CLI turn TLS on with a key too).
        files = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        return self.tls or self.api_key is not None or any(f is not None for f in files)

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TemporalSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both temporal.tls_cert_file and temporal.tls_key_file, or neither")
        return self

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host, int(port)


class MlflowSettings(Section):
    tracking_uri: str = "http://127.0.0.1:5000"
    experiment: str = "cryptopredict-training"


class LlmSettings(Section):
    # OpenAI-compatible endpoint: Ollama's /v1 in production, a local llama.cpp server here.
    base_url: str = "http://127.0.0.1:8081/v1"
    model: str = "smollm2-135m-instruct"
    api_key: SecretStr = SecretStr("local-no-key")
    context_size: int = 2048
    # Upper bound on a reply's length: the bounded output schema fits easily, a runaway answer does not.
    max_output_tokens: int = 256
    # Where the endpoint is a real Ollama: pull the model at worker start when it is missing.
    pull_model: bool = False


class NewsSettings(Section):
    poll_interval_s: float = 300.0
    # A schedule that missed runs (server or worker down) runs once for what it missed within this window.
    catch_up_window_s: float = 600.0
    # CryptoPanic is polled only when a token is set; it is a secret, never a default.
    cryptopanic_url: str = "https://cryptopanic.com/api/developer/v2/posts/"
    cryptopanic_token: SecretStr | None = None
    currencies: list[str] = Field(default_factory=lambda: ["BTC", "ETH", "SOL"])
    rss_feeds: list[str] = Field(
        default_factory=lambda: [
            "https://www.coindesk.com/arc/outboundfeeds/rss/",
            "https://cointelegraph.com/rss",
            "https://decrypt.co/feed",
        ]
    )
    # The model server is the bottleneck: LLM activities a worker runs at once.
    llm_concurrency: int = Field(default=1, ge=1)
    # Stored items whose scoring never finished (their ingest run died after storing them) that one run
    # starts scoring again, oldest first, besides the items it stores itself.
    pending_per_run: int = Field(default=50, gt=0)


class VenueSettings(Section):
    """One exchange's public trade feed. Pairs are the project's names (`BTC/USD`); cryptopredict.venues
    maps them to the venue's own symbols."""

    ws_url: str
    rest_url: str
    pairs: list[str] = Field(default_factory=lambda: ["BTC/USD"])
    # No message at all (heartbeats, pings included) for this long: reconnect.
    heartbeat_timeout_s: float = 10.0
    # Reconnect delays: base * 2**attempt, capped, times a random factor in [0.5, 1].
    backoff_base_s: float = 0.5
    max_backoff_s: float = 30.0
    # Trades stamped further ahead of our clock than this are rejected as malformed.
    max_future_s: float = 60.0
    # Least time between two public REST requests (gap fills, OHLC checks): the venue's rate limit.
    rest_min_interval_s: float = 1.0
    # A restarted feed fills at most this much downtime from REST itself; longer gaps need a backfill.
    max_gap_fill_s: float = 6 * 3600
    # The feed compares our stored 1m candles with the venue's OHLC endpoint this often (0: never), for
    # windows closed at least ohlc_check_delay_s ago (the grace period and the store sink come first); a
    # window whose open, high, low, close or volume differs by more than ohlc_tolerance (a fraction)
    # disagrees (cryptopredict.venue_check).
    ohlc_check_every_s: float = Field(default=60.0, ge=0)
    ohlc_check_delay_s: float = Field(default=120.0, ge=0)
    ohlc_tolerance: float = Field(default=0.01, gt=0)


class KrakenSettings(VenueSettings):
    ws_url: str = "wss://ws.kraken.com/v2"
    rest_url: str = "https://api.kraken.com"


class CoinbaseSettings(VenueSettings):
    ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    rest_url: str = "https://api.coinbase.com"
    # Public endpoints allow 10 requests a second per IP.
    rest_min_interval_s: float = 0.2


class BinanceSettings(VenueSettings):
    ws_url: str = "wss://stream.binance.com:9443"
    rest_url: str = "https://api.binance.com"
    pairs: list[str] = Field(default_factory=lambda: ["BTC/USDT"])
    # Binance sends no heartbeat messages, only a ping frame every 20 s; trades are far more frequent.
    heartbeat_timeout_s: float = 30.0
    # historicalTrades weighs 25 of the 6,000 request weight a minute: at most 200 a minute, with margin.
    rest_min_interval_s: float = 0.3


class GrpcSettings(Section):
    host: str = "127.0.0.1"
    port: int = 50051
    # The stream edge (grpc_server/edge.py): StreamPredictions for many subscribers, the rest relayed.
    edge_port: int = 50052
    # Bearer tokens the server accepts in `authorization: Bearer <token>`; empty turns authentication off.
    # Health checks stay open, for probes. A secret: set it in the environment or .env, not in code.
    tokens: list[SecretStr] = Field(default_factory=list)
    # PEM certificate chain and private key: with both set the server speaks TLS only.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Our own clients (watch, demo) verify the server against this CA bundle; unset: tls_cert_file
    # (right for a self-signed certificate), or plaintext when the server has no TLS.
    tls_ca_file: Path | None = None
    # ... and send this token; unset: the first of `tokens`.
    client_token: SecretStr | None = None
    # Bounds on one request: a larger message is RESOURCE_EXHAUSTED (gRPC's own size check), a longer
    # list of pairs or quantile levels INVALID_ARGUMENT naming the bound.
    max_request_bytes: int = Field(default=64 * 1024, gt=0)
    max_list_values: int = Field(default=100, gt=0)
    # Prediction streams one caller may hold open at once (its bearer token when tokens are set, else
    # its address); one more is RESOURCE_EXHAUSTED naming this setting.
    max_streams_per_caller: int = Field(default=16, gt=0)
    # Addresses not held to that bound: the stream edge opens a short admission stream on the server for
    # every subscriber it takes (a burst when 1,000 resubscribe) and enforces the bound on its own
    # subscribers itself. Loopback covers `cryptopredict edge` beside the server; add the edge's address
    # when it runs on another host, or remove loopback to hold local clients to the bound too.
    stream_limit_exempt_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])

    @property
    def client_ca_file(self) -> Path | None:
        """What our clients (watch, demo, the stream edge) verify the server against; None: plaintext."""
        return self.tls_ca_file or self.tls_cert_file

    @property
    def client_bearer_token(self) -> SecretStr | None:
        """The token our clients send; None: none."""
        return self.client_token or next(iter(self.tokens), None)

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> GrpcSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both grpc.tls_cert_file and grpc.tls_key_file, or neither")
        return self


class MetricsSettings(Section):
    """Where each process exposes /metrics (Prometheus scrapes these; infra/prometheus/). A negative
    port turns a process's endpoint off; a second process of a kind on one host needs another port."""

    host: str = "127.0.0.1"
    feed_port: int = 9101
    stream_port: int = 9102  # the Faust worker
    worker_port: int = 9103  # Temporal workers: the SDK runtime's endpoint, ours included
    grpc_port: int = 9104
    edge_port: int = 9105  # the stream edge
    # The feeds of the other venues (one process each; Kraken's is feed_port).
    coinbase_feed_port: int = 9106
    binance_feed_port: int = 9107
    # The local Prometheus the stack starts, scraping the ports above.
    prometheus_port: int = 9090
    # More `host:port` targets per job (feed, stream, worker, grpc, edge) for processes on other hosts,
    # e.g. '{"stream": ["10.0.0.5:9102", "10.0.0.6:9102"]}': one job per kind however many hosts run it.
    scrape_targets: dict[str, list[str]] = Field(default_factory=dict)

    def feed_metrics_port(self, exchange: str) -> int:
        """The /metrics port of one venue's feed."""
        port: int = self.feed_port if exchange == "kraken" else getattr(self, f"{exchange}_feed_port")
        return port


class FeatureSettings(Section):
    # Every interval gets candles and indicators.
    candle_intervals_s: list[int] = Field(default_factory=lambda: [60, 300, 3600])
    # The interval that training and predictions use (one of candle_intervals_s).
    interval_s: int = 60
    # Trades up to this late (event time) still land in their window.
    grace_s: float = 5.0
    # How often the idle timer looks for windows that should close without a new trade.
    idle_check_s: float = 1.0
    # The idle timer closes a pair's windows only after this long without any trade of the pair arriving:
    # a replay of old trades (timestamps long past) must not be cut by the wall clock while it flows.
    idle_close_s: float = 5.0
    # Venues whose candles of the same coin become features of the targets on the other venues (lagged
    # returns and the price spread, cryptopredict.features.cross_venue); each must be read (`venues`).
    # Empty: none. The gate decides whether a model that reads them is promoted.
    cross_venue: list[Exchange] = Field(default_factory=list)
    # Lagged returns of each such venue, in candles.
    cross_venue_lags: int = Field(default=3, ge=1)


ForecastTarget = Literal["price", "volatility"]
FORECAST_TARGETS: tuple[ForecastTarget, ...] = ("price", "volatility")


class ModelSettings(Section):
    # Forecast horizons, in candles of features.interval_s: one champion, retrain schedule and
    # prediction stream per (pair, horizon).
    horizons_candles: list[int] = Field(default_factory=lambda: [1], min_length=1)
    # What is retrained on a schedule for each (pair, horizon): the price model, the volatility model
    # (cryptopredict.ml.volatility_target), each with its own registered model and champion.
    targets: list[ForecastTarget] = Field(default_factory=lambda: list(FORECAST_TARGETS), min_length=1)
    # Further candle intervals to forecast at, each with its horizons in its own candles, e.g.
    # {"3600": [1, 6, 24]}: one champion, schedule and prediction stream per (pair, interval, horizon).
    horizons_by_interval: dict[int, list[int]] = Field(default_factory=dict)
    # Retrains a day, all targets together: the schedules are spread out so that they stay within it.
    max_retrains_per_day: int = Field(default=24, ge=1)
    lags: int = 10
    # Final test window, as a fraction of the newest rows: untouched until the challenger is evaluated.
    test_fraction: float = 0.2
    folds: int = Field(default=4, ge=2)
    trials: int = Field(default=20, ge=1)
    # A family's trials run as this many activities at once, on whichever training workers are free.
    tuning_batches: int = Field(default=4, ge=1)
    interval_coverage: float = Field(default=0.8, gt=0, lt=1)
    # The quantiles of the price each prediction carries (levels strictly between 0 and 1).
    quantile_levels: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9], min_length=1)
    # Adaptive conformal inference: the step by which each live outcome moves the interval's level
    # (Gibbs & Candes 2021); 0 keeps the calibrated level. How often the ledger's outcomes are read.
    aci_gamma: float = Field(default=0.005, ge=0, lt=1)
    aci_every_s: float = Field(default=60.0, gt=0)
    # The promotion gate: a challenger must beat persistence and the champion with a Diebold-Mariano
    # p-value below this.
    dm_alpha: float = Field(default=0.05, gt=0, lt=1)
    # ... and by more than this skill (1 - MAE / MAE of the other): a smaller gain is not worth a model.
    min_skill: float = Field(default=0.001, ge=0, lt=1)
    # Retrains per (pair, interval, horizon) on a Temporal schedule; 0 turns the schedule off.
    retrain_every_s: float = Field(default=86_400.0, ge=0)
    # How often the prediction agent checks the champion alias for a new version moved by hand: a
    # promotion or rollback by the pipeline reloads at once (model events). Each check is a registry
    # request per target, and the registry's work competes with the forecasts for the same cores.
    refresh_s: float = 30.0
    # A champion that reads sentiment refuses to predict when the coin's newest score is older than this
    # (the news poller or the LLM has stopped): its sentiment inputs would silently mean "no news".
    max_sentiment_age_s: float = Field(default=6 * 3600.0, gt=0)

    @field_validator("quantile_levels")
    @classmethod
    def _levels(cls, levels: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in levels) or len(set(levels)) != len(levels):
            raise ValueError(f"quantile levels must be distinct and strictly between 0 and 1, got {levels}")
        return sorted(levels)

    @field_validator("horizons_candles")
    @classmethod
    def _positive_distinct(cls, horizons: list[int]) -> list[int]:
        if any(h < 1 for h in horizons) or len(set(horizons)) != len(horizons):
            raise ValueError(f"horizons must be distinct positive candle counts, got {horizons}")
        return horizons

    @field_validator("horizons_by_interval")
    @classmethod
    def _each_positive_distinct(cls, by_interval: dict[int, list[int]]) -> dict[int, list[int]]:
        for horizons in by_interval.values():
            cls._positive_distinct(horizons)
        return by_interval


class DriftSettings(Section):
    """The drift monitor (workflows/drift.py): per (pair, horizon), how far the model inputs of the recent
    window have moved from the champion's training window (PSI per feature, sentiment included) and the
    champion's live skill against persistence from the outcome ledger; a breach starts a retrain."""

    # A DriftMonitorWorkflow per (pair, interval, horizon) on a Temporal schedule; 0 turns it off.
    every_s: float = Field(default=3600.0, ge=0)
    # The recent window ends at the newest candle (not the wall clock, so replays work the same).
    recent_window_s: float = Field(default=86_400.0, gt=0)
    # Population stability index: < 0.1 no shift, 0.1-0.25 moderate, > 0.25 significant (conventional).
    # A feature breaches above this plus its noise floor (what its autocorrelation gives by chance).
    psi_threshold: float = Field(default=0.25, gt=0)
    psi_bins: int = Field(default=10, ge=2)
    # Model inputs compared (dataset names, e.g. "ret_lag_1", "sentiment_mean_24h"); empty: all of them.
    features: list[str] = Field(default_factory=list)
    # A window with fewer usable rows than this gives no PSI (the feature is reported as not compared).
    min_rows: int = Field(default=100, ge=10)
    # Live skill vs persistence (1 - MAE / MAE_persistence) below this, over at least min_outcomes
    # outcomes of the champion in the recent window, is a breach.
    skill_threshold: float = 0.0
    min_outcomes: int = Field(default=360, ge=1)
    # After a retrain of the target ended, a breach within this long does not start another one (a
    # retrain the gate did not promote leaves the drift in place; this keeps it from retraining hourly).
    retrain_cooldown_s: float = Field(default=6 * 3600.0, ge=0)


class RetentionSettings(Section):
    """What the RetentionWorkflow (workflows/retention.py) prunes, and after how long: ages in days, 0 keeps
    that kind forever. It never deletes a model version holding an alias, the previous champion, or a
    study of a retrain still running."""

    # The RetentionWorkflow's Temporal schedule; 0 turns it off.
    every_s: float = Field(default=86_400.0, ge=0)
    # Rows of `predictions` whose target time is older (the outcome ledger loses them too).
    predictions_days: float = Field(default=180.0, ge=0)
    # Rows of `dead_letters`, by the time the letter was made.
    dead_letters_days: float = Field(default=30.0, ge=0)
    # Late trades live only in Kafka: this is the `retention.ms` the workflow sets on topic `late_trades`.
    late_trades_days: float = Field(default=7.0, ge=0)
    # Optuna studies whose last trial ended longer ago (studies of a running retrain are kept).
    optuna_studies_days: float = Field(default=30.0, ge=0)
    # Registered model versions created longer ago, except the champion, the previous champion and any
    # other version holding an alias.
    mlflow_versions_days: float = Field(default=90.0, ge=0)
    # Rows deleted per statement (each its own transaction), so a large backlog never holds a long lock.
    batch_rows: int = Field(default=5_000, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CRYPTOPREDICT_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,
    )

    local_dir: Path = Path(".local")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    news: NewsSettings = Field(default_factory=NewsSettings)
    # The exchanges whose trades are read; each has its section below. Kraken alone unless set.
    venues: list[Exchange] = Field(default=["kraken"], min_length=1)
    kraken: KrakenSettings = Field(default_factory=KrakenSettings)
    coinbase: CoinbaseSettings = Field(default_factory=CoinbaseSettings)
    binance: BinanceSettings = Field(default_factory=BinanceSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    # A demo's or a test run's own namespace: its pairs (`demo.BTC/USD` in every row and record key), topics,
    # task queues, schedules and registered models carry it, so it never writes where a live target does.
    namespace: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9]*$")

    @model_validator(mode="after")
    def _namespaced(self) -> Settings:
        return self._apply_namespace()

    def _apply_namespace(self) -> Settings:
        """Topic prefix and task queues start with `<namespace>.` (once, however often this runs)."""
        if self.namespace is None:
            return self
        mark = f"{self.namespace}."

        def marked(name: str) -> str:
            return name if name.startswith(mark) else mark + name

        self.kafka = self.kafka.model_copy(update={"topic_prefix": marked(self.kafka.topic_prefix)})
        queues = ("training_task_queue", "news_task_queue", "llm_task_queue")
        self.temporal = self.temporal.model_copy(
            update={queue: marked(getattr(self.temporal, queue)) for queue in queues}
        )
        return self

    def in_namespace(self, namespace: str) -> Settings:
        """These settings inside `namespace` (what `CRYPTOPREDICT_NAMESPACE` gives a process)."""
        if not re.fullmatch(r"[a-z][a-z0-9]*", namespace):
            raise ValueError(
                f"a namespace is lowercase letters and digits, starting with a letter: {namespace!r}"
            )
        return self.model_copy(update={"namespace": namespace})._apply_namespace()

    def venue(self, exchange: str) -> VenueSettings:
        """The settings section of one exchange."""
        section: VenueSettings = getattr(self, exchange)
        return section

    def venue_pairs(self, exchange: str) -> list[str]:
        """One venue's pairs as the project names them (namespaced when a namespace is set)."""
        return [namespaced_pair(pair, self.namespace) for pair in self.venue(exchange).pairs]

    @property
    def pairs(self) -> list[str]:
        """Market keys (topics.market_key) of every configured pair on every venue read: the pair itself on
        Kraken, `coinbase:BTC/USD` elsewhere; namespaced when a namespace is set."""
        return [market_key(exchange, pair) for exchange in self.venues for pair in self.venue_pairs(exchange)]

    @model_validator(mode="after")
    def _forecast_intervals_have_candles(self) -> Settings:
        if self.features.interval_s in self.model.horizons_by_interval:
            raise ValueError(
                f"model.horizons_by_interval repeats features.interval_s={self.features.interval_s}:"
                " give its horizons in model.horizons_candles"
            )
        built = set(self.features.candle_intervals_s)
        unbuilt = sorted({self.features.interval_s, *self.model.horizons_by_interval} - built)
        if unbuilt:
            raise ValueError(
                f"forecast interval(s) {unbuilt} have no candles: add them to features.candle_intervals_s"
            )
        unread = sorted(set(self.features.cross_venue) - set(self.venues))
        if unread:
            raise ValueError(
                f"features.cross_venue names venue(s) {unread} that are not read: add them to venues"
            )
        return self

    def forecast_horizons(self) -> dict[int, list[int]]:
        """Candle interval (seconds) -> its horizons in candles: every interval predictions are made at."""
        return {self.features.interval_s: self.model.horizons_candles, **self.model.horizons_by_interval}

    def forecast_targets(self) -> list[tuple[str, int, int]]:
        """Every (pair, interval_s, horizon_candles) with its own champion, schedule and stream."""
        return [
            (pair, interval_s, horizon)
            for pair in self.pairs
            for interval_s, horizons in sorted(self.forecast_horizons().items())
            for horizon in horizons
        ]


def validation_error_line(exc: ValidationError) -> str:
    """A refused model (the settings, or a request) as one line: where, and why; never the values."""
    reasons = [f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()]
    return f"invalid {exc.title}: " + "; ".join(reasons)


PROFILES_DIR = Path(__file__).resolve().parent.parent / "infra" / "profiles"


def profile_env_files(profile: str | None, local_dir: Path = Path(".local")) -> tuple[Path, ...]:
    """The env files a profile reads, later ones winning: `.env`, then `infra/profiles/<profile>.env`
    (committed, no secrets), then `<local_dir>/<profile>/secrets.env` (made by `stack up --profile`)."""
    if not profile:
        return (Path(".env"),)
    committed = PROFILES_DIR / f"{profile}.env"
    if not committed.exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.env"))
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(known) or 'none'}")
    return (Path(".env"), committed, local_dir / profile / "secrets.env")


def configured_local_dir() -> Path:
    """`local_dir` as the settings will read it (environment, then .env), before they are loaded: the
    profile's secrets live under it."""
    value = os.environ.get("CRYPTOPREDICT_LOCAL_DIR")
    if value is None and Path(".env").exists():
        from dotenv import dotenv_values

        value = dotenv_values(".env").get("CRYPTOPREDICT_LOCAL_DIR")
    return Path(value or ".local")


def load_settings(profile: str | None = None) -> Settings:
    """Settings of `profile` (default: the CRYPTOPREDICT_PROFILE variable); environment variables win."""
    profile = profile if profile is not None else os.environ.get("CRYPTOPREDICT_PROFILE") or None
    return Settings(_env_file=profile_env_files(profile, configured_local_dir()))  # type: ignore[call-arg]


@lru_cache
def get_settings() -> Settings:
    return load_settings()
