"""Cluster settings: what is refused at start, and how the security settings reach each client."""

import ssl
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from cryptopredict.kafka_client import client_kwargs, faust_credentials
from cryptopredict.retrain.runs import RetrainRuns
from cryptopredict.settings import KafkaSettings, PostgresSettings, Settings, load_settings
from cryptopredict.stack.base import redact_urls
from cryptopredict.stack.certs import LocalCA

pytestmark = pytest.mark.unit


def test_min_insync_above_replication_is_refused():
    with pytest.raises(ValidationError, match=r"min_insync_replicas \(3\) is above"):
        KafkaSettings(replication_factor=2, min_insync_replicas=3)


def test_sasl_ssl_needs_a_username_and_password():
    with pytest.raises(ValidationError, match="SASL_SSL needs"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="u")


def test_plaintext_clients_get_no_tls():
    kwargs = client_kwargs(KafkaSettings(bootstrap_servers="a:1,b:2"))
    assert kwargs == {"bootstrap_servers": "a:1,b:2", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaSettings()) is None


def test_sasl_ssl_clients_check_the_ca_and_send_scram(tmp_path):
    ca = LocalCA(tmp_path)
    ca.leaf("broker")  # makes the CA
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", ssl_ca_file=ca.cert_file, sasl_username="u", sasl_password="pw-1"
    )
    kwargs = client_kwargs(kafka)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "pw-1"
    context = kwargs["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    credentials = faust_credentials(kafka)
    assert credentials.mechanism.value == "SCRAM-SHA-512" and credentials.protocol.value == "SASL_SSL"
    # The password is a secret: printing the settings does not show it.
    assert "pw-1" not in repr(kafka) and "pw-1" not in str(Settings(kafka=kafka))


def test_postgres_tls_reaches_libpq_urls_and_asyncpg(tmp_path):
    pg = PostgresSettings(
        url="postgresql://u:p@db:5432/fs", sslmode="verify-full", ssl_root_cert=tmp_path / "ca"
    )
    url = urlsplit(pg.optuna_storage_url)
    assert url.path == "/optuna"
    assert parse_qs(url.query) == {"sslmode": ["verify-full"], "sslrootcert": [str(tmp_path / "ca")]}
    assert "sslmode" not in pg.async_url  # asyncpg reads no libpq parameters: its connect argument instead
    ca = LocalCA(tmp_path)
    ca.leaf("db")
    context = PostgresSettings(sslmode="verify-full", ssl_root_cert=ca.cert_file).asyncpg_connect_args()[
        "ssl"
    ]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert PostgresSettings(sslmode="require").asyncpg_connect_args() == {"ssl": "require"}
    assert PostgresSettings().asyncpg_connect_args() == {}


def test_the_cluster_profile_reads_its_file_then_the_made_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYPTOPREDICT_LOCAL_DIR", str(tmp_path))
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "secrets.env").write_text("CRYPTOPREDICT_KAFKA__SASL_PASSWORD=made\n")
    settings = load_settings("cluster")
    assert settings.kafka.replication_factor == 3 and settings.kafka.min_insync_replicas == 2
    assert len(settings.kafka.servers) == 3
    assert (
        settings.kafka.sasl_password is not None and settings.kafka.sasl_password.get_secret_value() == "made"
    )
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        load_settings("nope")


def test_logged_command_lines_hide_url_passwords():
    line = "mlflow server --backend-store-uri postgresql+psycopg://user:s3cret@db:5432/mlflow"
    assert (
        redact_urls(line) == "mlflow server --backend-store-uri postgresql+psycopg://user:***@db:5432/mlflow"
    )


def test_prometheus_scrapes_each_job_on_every_host_it_is_given():
    import yaml

    from cryptopredict.settings import MetricsSettings
    from cryptopredict.stack.base import StackError
    from cryptopredict.stack.prometheus import render_config

    metrics = MetricsSettings(
        feed_port=-1,
        binance_feed_port=-1,
        scrape_targets={"stream": ["10.0.0.5:9102"], "feed": ["10.0.0.7:9101"]},
    )
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in yaml.safe_load(render_config(metrics))["scrape_configs"]
    }
    assert jobs["stream"] == ["127.0.0.1:9102", "10.0.0.5:9102"]
    # Kraken's and Binance's local feed endpoints are off, Coinbase's and the remote one are scraped.
    assert jobs["feed"] == ["127.0.0.1:9106", "10.0.0.7:9101"]
    with pytest.raises(StackError, match="unknown job"):
        render_config(MetricsSettings(scrape_targets={"kafka": ["h:1"]}))


def test_on_risingwave_the_optuna_studies_stay_on_the_postgresql_of_metadata_url():
    store = {"dialect": "risingwave"}
    without = Settings(store=store, postgres={"url": "postgresql://u:p@risingwave:4566/dev"})
    with pytest.raises(ValueError, match=r"postgres\.metadata_url"):
        RetrainRuns(without)  # only a process that trains needs the metadata server's password
    metadata = "postgresql://m:q@pg:5432/?sslrootcert=/ca/pg.crt"
    settings = Settings(
        store=store,
        postgres={"url": without.postgres.url, "metadata_url": metadata, "ssl_root_cert": "/ca/store.crt"},
    )
    assert RetrainRuns(settings).settings is settings and not settings.store.sink_enabled
    for url, database in (
        (settings.postgres.optuna_storage_url, "/optuna"),
        (settings.postgres.mlflow_backend_uri, "/mlflow"),
    ):
        parts = urlsplit(url)
        assert (parts.hostname, parts.path, parts.username) == ("pg", database, "m")
        assert parse_qs(parts.query)["sslrootcert"] == ["/ca/pg.crt"]  # the URL's own CA wins
    assert urlsplit(settings.postgres.async_url).hostname == "risingwave"  # the feature store
