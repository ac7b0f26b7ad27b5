"""Applies infra/risingwave/feature_store.sql to RisingWave as deployed: the chart's hook Job runs it
(`featureStore: risingwave`) in the project's image, with the same settings as every other role.

The DDL is kept as it is checked (one copy in the repository, parsed in tests): it names the broker
`kafka:9092` and the topics without prefix. Here each Kafka table gets `kafka.bootstrap_servers`, the topic
under `kafka.topic_prefix`, and the brokers' security as RisingWave reaches them: `kafka.security_protocol`,
SCRAM-SHA-512 as --kafka-username (default: `kafka.sasl_username`) with the password of the environment
variable RW_KAFKA_SASL_PASSWORD (default: `kafka.sasl_password`), and the brokers' CA either as a path in
RisingWave's own pods (--kafka-ca-location; RisingWave's nodes read the topics, not this Job) or inlined
from `kafka.ssl_ca_file`. With --secret-object the password is kept in a RisingWave SECRET (its secret
store must be configured) and the tables name that; without, it is part of the tables' definitions.

The topics are created first (as every consuming process does): RisingWave refuses a table on a topic
that does not exist. With RW_ADMIN_URL (a superuser's URL) the Job connects as that user and creates the
user of `postgres.url` (or sets its password), then grants it what the project does on the store: read
everything, write the tables it writes through SQL. Every statement is IF NOT EXISTS or idempotent:
running it again changes nothing that exists.

    python apply_feature_store.py feature_store.sql            # apply
    python apply_feature_store.py feature_store.sql --print    # print the statements, passwords hidden
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cryptopredict.settings import KafkaSettings, PostgresSettings, get_settings
from cryptopredict.topics import topic_name

logger = logging.getLogger("apply_feature_store")

BROKER = re.compile(r"properties\.bootstrap\.server\s*=\s*'[^']*'")
TOPIC = re.compile(r"\btopic\s*=\s*'([^']+)'")
NAME = re.compile(r"CREATE\s+(?:MATERIALIZED\s+VIEW|TABLE|SOURCE)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\S+)", re.I)
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HIDDEN = "<hidden>"


@dataclass(frozen=True)
class KafkaAccess:
    """How RisingWave's sources reach the brokers."""

    bootstrap_servers: str
    security_protocol: str
    topic_prefix: str = ""
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = None
    ca_location: str | None = None
    ca_pem: str | None = None
    secret_object: str | None = None

    @classmethod
    def from_settings(
        cls,
        kafka: KafkaSettings,
        username: str | None = None,
        password: str | None = None,
        ca_location: str | None = None,
        secret_object: str | None = None,
    ) -> KafkaAccess:
        own = kafka.sasl_password.get_secret_value() if kafka.sasl_password is not None else None
        ca_pem = kafka.ssl_ca_file.read_text() if kafka.ssl_ca_file and not ca_location else None
        if kafka.ssl_cert_file is not None:
            raise SystemExit(
                "kafka.ssl_cert_file is set: this Job gives RisingWave no client certificate; give it a SCRAM user"
            )
        return cls(
            bootstrap_servers=kafka.bootstrap_servers,
            security_protocol=kafka.security_protocol,
            topic_prefix=kafka.topic_prefix,
            sasl_mechanism=kafka.sasl_mechanism,
            username=username or kafka.sasl_username,
            password=password or own,
            ca_location=ca_location,
            ca_pem=ca_pem,
            secret_object=secret_object,
        )

    def properties(self, hide: bool = False) -> str:
        """The WITH properties of a Kafka table."""
        props = [f"properties.bootstrap.server = {quote(self.bootstrap_servers)}"]
        if self.security_protocol != "PLAINTEXT":
            props.append(f"properties.security.protocol = {quote(self.security_protocol)}")
            if self.ca_location:
                props.append(f"properties.ssl.ca.location = {quote(self.ca_location)}")
            elif self.ca_pem:
                props.append(f"properties.ssl.ca.pem = {quote(self.ca_pem)}")
        if self.security_protocol == "SASL_SSL":
            if not self.username or not self.password:
                raise SystemExit("SASL_SSL: RisingWave needs a Kafka username and password")
            if self.secret_object:
                password = f"secret {identifier(self.secret_object)}"
            else:
                password = quote(HIDDEN if hide else self.password)
            props += [
                f"properties.sasl.mechanism = {quote(self.sasl_mechanism)}",
                f"properties.sasl.username = {quote(self.username)}",
                f"properties.sasl.password = {password}",
            ]
        return ",\n    ".join(props)


def statements(sql: str) -> list[str]:
    """The file's statements without comments, split at semicolons outside string literals."""
    found: list[str] = []
    current = ""
    # A string literal ('' inside is a quote), a comment to the end of the line, a semicolon, or any run of
    # other characters (a lone '-' or an unterminated quote included).
    for token in re.findall(r"'(?:[^']|'')*'|--[^\n]*|;|[^';-]+|[-']", sql):
        if token.startswith("--"):
            continue
        if token == ";":
            found.append(current.strip())
            current = ""
        else:
            current += token
    found.append(current.strip())
    return [statement for statement in found if statement]


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def identifier(name: str) -> str:
    if not IDENTIFIER.fullmatch(name):
        raise SystemExit(f"{name!r} is not a plain SQL identifier")
    return name


def render(sql: str, kafka: KafkaAccess, hide: bool = False) -> list[str]:
    """The DDL's statements with each Kafka table's broker, topic and security as deployed."""
    properties = kafka.properties(hide)
    rendered = []
    for statement in statements(sql):
        brokers, topics = len(BROKER.findall(statement)), len(TOPIC.findall(statement))
        if brokers != topics or brokers > 1:
            raise SystemExit(f"a Kafka table with {brokers} brokers and {topics} topics: {statement[:80]}")
        statement = TOPIC.sub(
            lambda m: f"topic = {quote(topic_name(m.group(1), kafka.topic_prefix))}", statement
        )
        rendered.append(BROKER.sub(lambda _: properties, statement))
    return rendered


def user_statements(postgres: PostgresSettings, exists: bool, hide: bool = False) -> list[str]:
    """Create (or set the password of) the user of `postgres.url`."""
    parts = urlsplit(postgres.url)
    user = identifier(unquote(parts.username or ""))
    password = HIDDEN if hide else unquote(parts.password or "")
    verb = "ALTER" if exists else "CREATE"
    return [f"{verb} USER {user} WITH PASSWORD {quote(password)}"]


def grant_statements(postgres: PostgresSettings) -> list[str]:
    """What the project does on the store: read every table and view, write the tables it writes through
    SQL (news items, sentiment scores, dead letters of the news flow, interval adaptation)."""
    user = identifier(unquote(urlsplit(postgres.url).username or ""))
    return [
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {user}",
        f"GRANT SELECT ON ALL MATERIALIZED VIEWS IN SCHEMA public TO {user}",
    ]


def secret_statement(kafka: KafkaAccess, hide: bool = False) -> str:
    assert kafka.secret_object and kafka.password
    value = HIDDEN if hide else kafka.password
    return f"CREATE SECRET {identifier(kafka.secret_object)} WITH (backend = 'meta') AS {quote(value)}"


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("ddl", type=Path)
    parser.add_argument("--print", action="store_true", help="print the statements (passwords hidden)")
    parser.add_argument("--database", default=None, help="default: the database of postgres.url")
    parser.add_argument("--kafka-username", default=None, help="RisingWave's SCRAM user (default: ours)")
    parser.add_argument("--kafka-ca-location", default=None, help="the brokers' CA in RisingWave's pods")
    parser.add_argument("--secret-object", default=None, help="a RisingWave SECRET for the SCRAM password")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = arguments()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    settings = get_settings()
    postgres = settings.postgres
    kafka = KafkaAccess.from_settings(
        settings.kafka,
        username=args.kafka_username,
        password=os.environ.get("RW_KAFKA_SASL_PASSWORD") or None,
        ca_location=args.kafka_ca_location,
        secret_object=args.secret_object,
    )
    sql = args.ddl.read_text()
    admin_url = os.environ.get("RW_ADMIN_URL") or None
    if args.print:
        shown = render(sql, kafka, hide=True)
        if kafka.secret_object:
            shown.insert(0, secret_statement(kafka, hide=True))
        if admin_url:
            shown = user_statements(postgres, exists=False, hide=True) + shown + grant_statements(postgres)
        print(";\n\n".join(shown) + ";")
        return 0

    from cryptopredict.kafka_admin import ensure_topics

    created = asyncio.run(ensure_topics(settings.kafka))
    logger.info("topics created: %s", ", ".join(created) or "none (all there)")

    import psycopg

    database = args.database or postgres.database
    url = postgres.url_for(database, server=admin_url)
    with psycopg.connect(url, autocommit=True) as conn:
        if admin_url:
            user = unquote(urlsplit(postgres.url).username or "")
            exists = conn.execute("SELECT 1 FROM pg_catalog.pg_user WHERE usename = %s", (user,)).fetchone()
            for statement in user_statements(postgres, exists is not None):
                logger.info("%s user %s", "updating" if exists else "creating", user)
                conn.execute(statement.encode())
        if kafka.secret_object:
            found = conn.execute(
                "SELECT 1 FROM rw_catalog.rw_secrets WHERE name = %s", (kafka.secret_object,)
            ).fetchone()
            if found is None:
                logger.info("creating secret %s", kafka.secret_object)
                conn.execute(secret_statement(kafka).encode())
        for statement in render(sql, kafka):
            name = NAME.search(statement)
            logger.info("applying %s", name.group(1) if name else statement[:60])
            conn.execute(statement.encode())
        if admin_url:
            for statement in grant_statements(postgres):
                conn.execute(statement.encode())
    logger.info("feature store DDL applied to %s:%s/%s", postgres.host, postgres.port, database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
