"""The RisingWave DDL declares the same tables and columns as the PostgreSQL schema (the migrations),
so the SQL of training and serving runs unchanged on both. (RisingWave itself is not runnable here.)"""

import re
from pathlib import Path

import pytest

from cryptopredict.store.schema import metadata

pytestmark = pytest.mark.unit

DDL = Path(__file__).resolve().parents[2] / "infra" / "risingwave" / "feature_store.sql"
# Written by the services through SQL, not read from a Kafka topic.
WRITTEN_BY_SQL = {"interval_adaptation"}


def declared_tables() -> dict[str, set[str]]:
    text = re.sub(r"--[^\n]*", "", DDL.read_text())
    tables = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\)(?: WITH|;)", text, re.S):
        columns = set()
        for line in body.strip().splitlines():
            first = line.strip().split()[0].strip('"')
            if first != "PRIMARY":
                columns.add(first)
        tables[name] = columns
    return tables


def test_risingwave_tables_match_the_postgres_schema():
    declared = declared_tables()
    assert set(declared) == set(metadata.tables)
    for name, table in metadata.tables.items():
        expected = {c.name for c in table.columns}
        if name == "dead_letters":
            # A PostgreSQL identity, and the key that stops our sink storing a letter it reads again:
            # RisingWave reads each record once (its Kafka offsets are in its checkpointed state).
            expected -= {"id", "letter_key"}
        assert declared[name] == expected, name


def test_every_table_reads_plain_json_and_keys_rows_by_its_primary_key():
    # FORMAT UPSERT would key rows by the Kafka message key (RisingWave requires the primary key to be the
    # INCLUDE KEY column), and our records are keyed by pair: one row per pair would survive.
    text = re.sub(r"--[^\n]*", "", DDL.read_text())
    formats = re.findall(r"\) FORMAT (\w+) ENCODE (\w+);", text)
    assert formats and set(formats) == {("PLAIN", "JSON")}
    assert len(formats) == len(set(declared_tables()) - WRITTEN_BY_SQL)
    blocks = dict(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\)(?: WITH|;)", text, re.S))
    for name, table in metadata.tables.items():
        if name != "dead_letters":
            keys = ", ".join(c.name for c in table.primary_key.columns)
            assert f"PRIMARY KEY ({keys})" in blocks[name], name


def test_the_outcome_ledger_view_is_the_same_query_on_both():
    import importlib

    # The newest revision that creates the view (0007 recreated it with the uncertainty columns).
    migration = importlib.import_module("cryptopredict.store.migrations.versions.0007_prediction_quantiles")
    postgres = migration.OUTCOMES.split(" AS\n", 1)[1]
    text = re.sub(r"--[^\n]*", "", DDL.read_text())
    risingwave = text.split("CREATE MATERIALIZED VIEW IF NOT EXISTS prediction_outcomes AS", 1)[1].split(";")[
        0
    ]
    assert " ".join(postgres.split()) == " ".join(risingwave.split())
