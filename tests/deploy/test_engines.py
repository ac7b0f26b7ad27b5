"""The engines around the project, as the example manifests of infra/ describe them, checked offline:
every file parses; the Strimzi objects validate against the Strimzi CRDs vendored in infra/strimzi/crds
(strictly: an unknown field fails, as with `kubectl apply --validate=strict`); the KafkaTopics are exactly
the topics the code creates with the settings of infra/engines.env, and the KafkaUsers' ACLs allow what the
project and RisingWave do; the Temporal values, the PostgreSQL cluster and the RisingWave object agree with
each other and with those settings; no manifest holds a secret. Kinds without a schema from a registry
must be listed as unvalidated in docs/kubernetes-engines.md.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dotenv import dotenv_values

from cryptopredict import topics
from cryptopredict.settings import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
CRDS = INFRA / "strimzi" / "crds"
ENGINES_ENV = INFRA / "engines.env"
DOCS = REPO / "docs" / "kubernetes-engines.md"
MANIFESTS = [
    *sorted((INFRA / "strimzi").glob("*.yaml")),
    *sorted((INFRA / "postgres").glob("*.yaml")),
    *sorted((INFRA / "risingwave").glob("*.yaml")),
]
TEMPORAL_VALUES = INFRA / "temporal" / "values.yaml"
# libyaml's loader where PyYAML has it: the Kafka CRD alone is 330 kB.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def load(text: str) -> Any:
    return yaml.load(text, Loader=LOADER)


@functools.cache
def objects() -> list[dict[str, Any]]:
    """Every Kubernetes object of the example manifests (and the Temporal values' extra objects); shared:
    a test that changes one works on a copy."""
    found = [doc for path in MANIFESTS for doc in yaml.load_all(path.read_text(), Loader=LOADER) if doc]
    values = yaml.safe_load(TEMPORAL_VALUES.read_text())
    found += [yaml.safe_load(text) for text in values.get("extraObjects", [])]
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in objects() if o["kind"] == kind]


@functools.cache
def crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema of that version, from the vendored CRDs."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists an object's fields (the API server prunes
    them silently; `kubectl apply --validate=strict` refuses them): a misspelt field fails here."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


def schema_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(strict(schema))
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message[:200]}"
        for error in validator.iter_errors(obj)
    ]


@pytest.fixture
def engine_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings of infra/engines.env alone (the secrets it names get placeholders)."""
    import os

    for name in list(os.environ):
        if name.startswith("CRYPTOPREDICT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRYPTOPREDICT_KAFKA__SASL_PASSWORD", "placeholder")
    monkeypatch.setenv(
        "CRYPTOPREDICT_POSTGRES__METADATA_URL", "postgresql://cryptopredict:placeholder@postgres:5432/"
    )
    return Settings(_env_file=ENGINES_ENV)  # type: ignore[call-arg]


def test_every_manifest_parses_into_named_objects() -> None:
    assert MANIFESTS and TEMPORAL_VALUES.exists()
    for obj in objects():
        assert {"apiVersion", "kind", "metadata"} <= obj.keys(), obj
        name = obj["metadata"]["name"]
        assert DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 253, f"{obj['kind']} {name!r}"
        assert "namespace" not in obj["metadata"], "applied with -n, like the chart"


def test_the_vendored_crds_carry_their_version() -> None:
    pom = (CRDS / "pom.xml").read_text()
    match = re.search(r"<strimzi.version>([^<]+)</strimzi.version>", pom)
    assert match is not None
    version = match.group(1)
    files = sorted(CRDS.glob("*.yaml"))
    assert len(files) == 4, files
    for path in files:
        assert path.stem.endswith(f"-{version}"), path.name
        assert path.read_text().startswith(f"# Strimzi {version}: "), path.name
    assert f"io.strimzi:api:{version}" in (CRDS / "README.md").read_text()


def test_strimzi_objects_validate_against_the_strimzi_crds() -> None:
    schemas = crds()
    strimzi = [o for o in objects() if o["apiVersion"].startswith("kafka.strimzi.io/")]
    assert {o["kind"] for o in strimzi} == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    for obj in strimzi:
        key = (obj["apiVersion"], obj["kind"])
        assert key in schemas, f"no vendored CRD for {key}"
        errors = schema_errors(obj, schemas[key])
        assert not errors, f"{obj['kind']} {obj['metadata']['name']}: {errors}"


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        ("Kafka", lambda o: o["spec"]["kafka"].update(listners=[]), "listners"),
        (
            "Kafka",
            lambda o: o["spec"]["kafka"]["listeners"][0]["authentication"].update(type="scram"),
            "scram",
        ),
        ("KafkaTopic", lambda o: o["spec"].update(partitions="three"), "three"),
        ("KafkaUser", lambda o: o["spec"]["authorization"]["acls"][0].update(operations=["Reed"]), "Reed"),
        ("KafkaNodePool", lambda o: o["spec"].pop("roles"), "roles"),
    ],
)
def test_the_validation_refuses_a_broken_object(kind: str, change: Any, expected: str) -> None:
    obj = copy.deepcopy(of_kind(kind)[0])
    change(obj)
    errors = schema_errors(obj, crds()[(obj["apiVersion"], kind)])
    assert any(expected in error for error in errors), errors


def test_kafka_topics_are_the_topics_of_the_code(engine_settings: Settings) -> None:
    """A topic added to cryptopredict/topics.py without a KafkaTopic (or with other partitions,
    replication or config than the project would create it with) fails here."""
    kafka = engine_settings.kafka
    expected = {
        topics.topic_name(name, kafka.topic_prefix): (
            kafka.partitions,
            kafka.replication_factor,
            kafka.topic_config,
        )
        for name in topics.ALL_TOPICS
    }
    (cluster,) = of_kind("Kafka")
    found = {}
    for obj in of_kind("KafkaTopic"):
        assert obj["metadata"]["labels"]["strimzi.io/cluster"] == cluster["metadata"]["name"]
        name = obj["spec"].get("topicName", obj["metadata"]["name"])
        config = {key: str(value) for key, value in obj["spec"].get("config", {}).items()}
        found[name] = (obj["spec"]["partitions"], obj["spec"]["replicas"], config)
    assert sorted(found) == sorted(expected)
    assert found == expected


def bootstrap(settings: Settings) -> tuple[str, int]:
    host, port = settings.kafka.first_host_port
    return host, port


def test_the_kafka_cluster_is_the_one_the_settings_reach(engine_settings: Settings) -> None:
    kafka = engine_settings.kafka
    (cluster,) = of_kind("Kafka")
    name = cluster["metadata"]["name"]
    host, port = bootstrap(engine_settings)
    assert host.split(".")[0] == f"{name}-kafka-bootstrap"
    (listener,) = [item for item in cluster["spec"]["kafka"]["listeners"] if item["port"] == port]
    assert listener["tls"] is True and kafka.security_protocol == "SASL_SSL"
    assert listener["authentication"]["type"] == "scram-sha-512" == kafka.sasl_mechanism.lower()
    assert cluster["spec"]["kafka"]["authorization"]["type"] == "simple"
    config = cluster["spec"]["kafka"]["config"]
    assert int(config["min.insync.replicas"]) == kafka.min_insync_replicas
    assert int(config["default.replication.factor"]) == kafka.replication_factor
    pools = [p for p in of_kind("KafkaNodePool") if p["metadata"]["labels"]["strimzi.io/cluster"] == name]
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    assert brokers >= kafka.replication_factor >= 3 and controllers >= 3  # KRaft with a quorum
    users = {u["metadata"]["name"]: u for u in of_kind("KafkaUser")}
    assert users[kafka.sasl_username]["spec"]["authentication"]["type"] == "scram-sha-512"
    assert engine_settings.kafka.ssl_ca_file is not None


def allowed(user: dict[str, Any], resource_type: str, name: str, operation: str) -> bool:
    """Whether the user's simple-authorization ACLs allow `operation` on the resource (deny wins)."""
    verdicts = []
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        if resource["type"] != resource_type:
            continue
        if resource_type != "cluster":
            pattern = resource.get("patternType", "literal")
            wanted = resource.get("name", "*")
            if not (wanted == "*" or (name == wanted if pattern == "literal" else name.startswith(wanted))):
                continue
        if operation in acl["operations"] or "All" in acl["operations"]:
            verdicts.append(acl.get("type", "allow"))
    return "allow" in verdicts and "deny" not in verdicts


def test_the_project_user_may_do_what_the_project_does(engine_settings: Settings) -> None:
    kafka = engine_settings.kafka
    user = {u["metadata"]["name"]: u for u in of_kind("KafkaUser")}[kafka.sasl_username]
    for name in topics.ALL_TOPICS:
        topic = topics.topic_name(name, kafka.topic_prefix)
        for operation in ("Describe", "DescribeConfigs", "Read", "Write", "Create"):
            assert allowed(user, "topic", topic, operation), (topic, operation)
    # Faust: consumer group = app id; changelog, repartition and leader topics under "<app id>-".
    app = topics.topic_name(topics.FAUST_APP_ID, kafka.topic_prefix)
    for internal in (f"{app}-candle_state-changelog", f"{app}-__assignor-__leader", f"{app}-x-repartition"):
        for operation in ("Describe", "DescribeConfigs", "AlterConfigs", "Read", "Write", "Create"):
            assert allowed(user, "topic", internal, operation), (internal, operation)
    for operation in ("Describe", "Read"):
        assert allowed(user, "group", app, operation), operation
    assert allowed(user, "cluster", "kafka-cluster", "Describe")
    # ... and nothing beyond its own topics.
    assert not allowed(user, "topic", "someone-elses-topic", "Read")
    assert not allowed(user, "topic", topics.topic_name(topics.TRADES, kafka.topic_prefix), "Delete")


def test_risingwave_may_read_every_topic_of_its_ddl(engine_settings: Settings) -> None:
    ddl = (INFRA / "risingwave" / "feature_store.sql").read_text()
    sourced = sorted(set(re.findall(r"\btopic\s*=\s*'([^']+)'", ddl)))
    assert sourced, "no Kafka source in feature_store.sql"
    prefix = engine_settings.kafka.topic_prefix
    known = {topics.topic_name(name, prefix) for name in topics.ALL_TOPICS}
    assert set(sourced) <= known, f"the DDL reads topics the project does not make: {set(sourced) - known}"
    user = {u["metadata"]["name"]: u for u in of_kind("KafkaUser")}["risingwave"]
    for topic in sourced:
        for operation in ("Describe", "Read"):
            assert allowed(user, "topic", topic, operation), (topic, operation)
        assert not allowed(user, "topic", topic, "Write")
    assert allowed(user, "group", "rw-consumer-1001", "Read")


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")
    else:
        yield path, node


SECRET_KEYS = re.compile(r"\.(password|sasl\.jaas\.config|api_?key|token|secretaccesskey|accesskeyid)$", re.I)


def test_no_manifest_holds_a_secret() -> None:
    documents = [*objects(), yaml.safe_load(TEMPORAL_VALUES.read_text())]
    assert not [o for o in documents if o.get("kind") == "Secret"], "Secrets are made by operators or people"
    for document in documents:
        for path, value in walk(document):
            if SECRET_KEYS.search(path):
                assert value in (None, ""), f"a secret value at {path}"
            assert not path.endswith(".privateKey.value"), f"a literal key at {path}"
    names = dotenv_values(ENGINES_ENV)
    secret_settings = {
        "CRYPTOPREDICT_KAFKA__SASL_PASSWORD",
        "CRYPTOPREDICT_POSTGRES__URL",
        "CRYPTOPREDICT_TEMPORAL__API_KEY",
        "CRYPTOPREDICT_NEWS__CRYPTOPANIC_TOKEN",
        "CRYPTOPREDICT_GRPC__TOKENS",
        "CRYPTOPREDICT_GRPC__CLIENT_TOKEN",
    }
    assert not secret_settings & names.keys()


def test_engines_env_names_only_settings_that_exist(engine_settings: Settings) -> None:
    for name in dotenv_values(ENGINES_ENV):
        assert name.startswith("CRYPTOPREDICT_"), name
        node: Any = engine_settings
        for part in name.removeprefix("CRYPTOPREDICT_").lower().split("__"):
            assert part in type(node).model_fields, f"{name}: no setting {part!r}"
            node = getattr(node, part)
    assert engine_settings.store.dialect == "risingwave" and not engine_settings.store.sink_enabled


def test_temporal_values_agree_with_the_settings_and_the_database(engine_settings: Settings) -> None:
    values = yaml.safe_load(TEMPORAL_VALUES.read_text())
    server = values["server"]
    temporal = engine_settings.temporal
    frontend = server["tls"]["frontend"]
    assert frontend["enabled"] and frontend["requireClientAuth"] and server["tls"]["internode"]["enabled"]
    assert temporal.uses_tls and temporal.tls_cert_file and temporal.tls_key_file
    assert temporal.tls_server_name == frontend["serverName"]
    namespaces = [n["name"] for n in server["config"]["namespaces"]["namespace"]]
    assert temporal.namespace in namespaces
    certificates = {c["spec"]["secretName"]: c for c in of_kind("Certificate")}
    assert temporal.tls_server_name in certificates[frontend["secretName"]]["spec"]["dnsNames"]
    assert temporal.host_port[0].split(".")[0] in certificates[frontend["secretName"]]["spec"]["dnsNames"]
    assert "client auth" in certificates["cryptopredict-temporal-client"]["spec"]["usages"]
    # Persistence: databases and roles of the PostgreSQL cluster, over TLS, the password from a Secret.
    (cluster,) = of_kind("Cluster")
    databases = {d["spec"]["name"]: d["spec"]["owner"] for d in of_kind("Database")}
    roles = {r["name"]: r["passwordSecret"]["name"] for r in cluster["spec"]["managed"]["roles"]}
    for store in server["config"]["persistence"]["datastores"].values():
        sql = store["sql"]
        assert sql["connectAddr"] == f"{cluster['metadata']['name']}-rw:5432"
        assert databases[sql["databaseName"]] == sql["user"]
        assert roles[sql["user"]] == sql["existingSecret"] and "password" not in sql
        assert sql["tls"]["enabled"] and sql["tls"]["enableHostVerification"]


def test_postgres_has_a_database_for_each_of_its_users(engine_settings: Settings) -> None:
    (cluster,) = of_kind("Cluster")
    databases = {d["spec"]["name"] for d in of_kind("Database")}
    databases.add(cluster["spec"]["bootstrap"]["initdb"]["database"])
    assert {engine_settings.postgres.mlflow_database, engine_settings.postgres.optuna_database} <= databases
    assert {"temporal", "temporal_visibility"} <= databases
    (risingwave,) = of_kind("RisingWave")
    meta = risingwave["spec"]["metaStore"]["postgresql"]
    assert meta["database"] in databases and meta["host"] == f"{cluster['metadata']['name']}-rw"
    roles = {r["passwordSecret"]["name"] for r in cluster["spec"]["managed"]["roles"]}
    assert meta["credentials"]["secretName"] in roles


def test_risingwave_reaches_kafka_and_serves_tls(engine_settings: Settings) -> None:
    (risingwave,) = of_kind("RisingWave")
    (cluster,) = of_kind("Kafka")
    ca_secret = f"{cluster['metadata']['name']}-cluster-ca-cert"
    for component in ("meta", "frontend", "compute"):
        for group in risingwave["spec"]["components"][component]["nodeGroups"]:
            mounted = [v["secret"]["secretName"] for v in group["template"]["spec"].get("volumes", [])]
            assert ca_secret in mounted, component
    certificates = {c["spec"]["secretName"]: c for c in of_kind("Certificate")}
    served = certificates[risingwave["spec"]["tls"]["secretName"]]
    assert f"{risingwave['metadata']['name']}-frontend" in served["spec"]["dnsNames"]
    assert engine_settings.postgres.sslmode == "verify-full" and engine_settings.postgres.ssl_root_cert


def test_the_docs_list_what_is_not_validated() -> None:
    """Every kind without a vendored schema is named in the docs' list of unvalidated objects."""
    text = DOCS.read_text()
    section = text[text.index("## What is validated and what is not") :]
    validated = set(crds())
    for obj in objects():
        if (obj["apiVersion"], obj["kind"]) not in validated:
            assert f"`{obj['kind']}`" in section, f"{obj['kind']} ({obj['apiVersion']}) is not listed"
    assert "infra/temporal/values.yaml" in section
