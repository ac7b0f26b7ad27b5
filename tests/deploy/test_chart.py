"""The Helm chart infra/helm/cryptopredict, checked offline with Helm v4 (built from the Go module proxy,
infra/helm-tool) for each values file: `helm lint --strict`; every rendered object valid against the
Kubernetes JSON schemas of kubernetes-validate (strictly: an unknown field fails), the prometheus-operator
kinds checked for what they select; each role runs a command and options the CLI has (MLflow's too); every
CRYPTOPREDICT_* name is a setting and every pod's environment loads as the settings; nothing holds a
secret; the dashboards, rules and DDL are the repository's files (through the chart's links); the
RisingWave DDL as the hook Job renders it still parses; the values the chart refuses are refused.

Needs the helm binary (built once per version, minutes the first time) and no service.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import kubernetes_validate
import pytest
import typer.main
import yaml
from pydantic import BaseModel, SecretStr

from cryptopredict.cli import app
from cryptopredict.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "infra" / "helm" / "cryptopredict"
# The Kubernetes version the chart targets: `helm template --kube-version` and the schemas of
# kubernetes-validate (which ships 1.25 to 1.37) are both this one.
KUBE_VERSION = "1.33"
RELEASE = "cp"
NAMESPACE = "cryptopredict"
# Each values file as `helm install` gets it: values.yaml always, the production file over it.
VALUES = {"small": [], "production": [CHART / "values-production.yaml"]}

IMAGE_ENTRYPOINT = ["tini", "--", "cryptopredict"]  # infra/docker/Dockerfile
ENV_NAME = re.compile(r"\bCRYPTOPREDICT_[A-Z0-9_]+")
# Read by the code besides the settings fields (cryptopredict/settings.py: load_settings).
NON_FIELD_NAMES = {"CRYPTOPREDICT_PROFILE"}
# Kinds of operators: no registry serves their CRDs' schemas (docs/kubernetes.md lists them).
OPERATOR_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
ROLES = {"feed", "stream", "worker", "serve", "edge", "migrate", "mlflow", "risingwave-ddl"}
# The /metrics ports of the feeds of the other venues (MetricsSettings defaults).
METRICS_PORTS = {"coinbase": 9106, "binance": 9107}


# --- rendering -----------------------------------------------------------------------------------------


class HelmError(RuntimeError):
    pass


@pytest.fixture(scope="module")
def template(run_helm: Callable[..., str]) -> Callable[..., str]:
    """The chart rendered as installed in NAMESPACE under RELEASE, with `values` (a key of VALUES) and
    extra `helm template` arguments (`--set ...`); HelmError with Helm's message when it refuses."""

    def render(values: str = "small", *extra: str) -> str:
        files = [arg for path in VALUES[values] for arg in ("-f", str(path))]
        try:
            return run_helm(
                "template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", f"{KUBE_VERSION}.0",
                *files, *extra,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise HelmError(exc.stderr) from None

    return render


@pytest.fixture(scope="module")
def rendered(template: Callable[..., str]) -> dict[str, list[dict[str, Any]]]:
    """Every object of the chart, per values file (rendered once)."""
    return {name: [doc for doc in yaml.safe_load_all(template(name)) if doc] for name in VALUES}


# --- helpers -------------------------------------------------------------------------------------------


def settings_env_names(model: type[BaseModel] = Settings, prefix: str = "CRYPTOPREDICT_") -> set[str]:
    """Every environment variable the settings read: a field of Settings, a section as a whole (JSON),
    or a field of a section (env_nested_delimiter "__")."""
    names = set()
    for field, info in model.model_fields.items():
        name = prefix + field.upper()
        names.add(name)
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names |= settings_env_names(section, name + "__")
    return names


def unknown_settings(names: set[str]) -> set[str]:
    """The names that no setting reads (a typo)."""
    return names - settings_env_names() - NON_FIELD_NAMES


def secret_setting_names() -> set[str]:
    """The settings that hold a secret: every SecretStr field (or list of them), and the URLs with passwords."""
    found = {"CRYPTOPREDICT_POSTGRES__URL", "CRYPTOPREDICT_POSTGRES__METADATA_URL"}
    for section, info in Settings.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for field, sub in model.model_fields.items():
            annotation = sub.annotation
            if SecretStr in (
                annotation,
                *get_args(annotation),
                *(a for t in get_args(annotation) for a in get_args(t)),
            ):
                found.add(f"CRYPTOPREDICT_{section.upper()}__{field.upper()}")
    return found


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, container) of every Deployment and Job."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield doc, container


def container_venue(container: dict[str, Any]) -> str | None:
    """The venue a feed container reads (`cryptopredict feed --venue V`); None for another role."""
    args = container.get("args", [])
    if args[:1] != ["feed"]:
        return None
    ctx = typer.main.get_command(app).commands["feed"].make_context("feed", list(args[1:]))  # type: ignore[attr-defined]
    venue: str = ctx.params["venue"]
    return venue


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def command_line(container: dict[str, Any]) -> list[str]:
    """What the container runs: its command (default: the image's entrypoint) and args."""
    return [*container.get("command", IMAGE_ENTRYPOINT), *container.get("args", [])]


def pod_environment(
    docs: list[dict[str, Any]], doc: dict[str, Any], container: dict[str, Any]
) -> dict[str, str]:
    """The container's environment as Kubernetes gives it: its ConfigMaps, then its env entries; a Secret's
    value stands in as a placeholder of the right form."""
    configmaps = by_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= configmaps[source["configMapRef"]["name"]]["data"]
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            assert "secretKeyRef" in entry["valueFrom"], entry
            env[entry["name"]] = placeholder(entry["name"])
    return env


def placeholder(name: str) -> str:
    if name.endswith("_URL"):
        return "postgresql://user:placeholder@db.invalid:5432/db"
    if name == "CRYPTOPREDICT_GRPC__TOKENS":
        return '["placeholder"]'
    return "placeholder"


def load_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process with exactly this environment gets (no .env file)."""
    with monkeypatch.context() as patch:
        import os

        for name in list(os.environ):
            if name.startswith("CRYPTOPREDICT_"):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("apply_feature_store", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    else:
        yield path, node


# --- Helm ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_helm_lint_passes_strictly(run_helm: Callable[..., str], values: str) -> None:
    files = [arg for path in VALUES[values] for arg in ("-f", str(path))]
    out = run_helm("lint", "--strict", "--kube-version", f"{KUBE_VERSION}.0", CHART, *files)
    assert "0 chart(s) failed" in out


def test_helm_is_the_pinned_version_built_once_outside_the_clone(
    helm: Path, run_helm: Callable[..., str]
) -> None:
    from cryptopredict.stack.tools import tool_cache_root

    pinned = re.search(r"helm\.sh/helm/v4 (v\S+)", (REPO / "infra" / "helm-tool" / "go.mod").read_text())
    assert pinned is not None
    assert f'Version:"{pinned.group(1)}"' in run_helm("version")
    assert helm.parent.parent == tool_cache_root().resolve()
    assert helm.parent.name.startswith(f"helm-{pinned.group(1)}-")  # a new pin, a new folder


# --- Kubernetes schemas --------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_every_object_is_valid_for_the_targeted_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], values: str
) -> None:
    docs = rendered[values]
    unvalidated = set()
    for doc in docs:
        kind = (doc["apiVersion"], doc["kind"])
        if kind in OPERATOR_KINDS:
            unvalidated.add(kind)
            continue
        try:
            assert kubernetes_validate.validate(doc, KUBE_VERSION, strict=True) == KUBE_VERSION
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
        assert doc["metadata"].get("namespace") in (None, NAMESPACE)
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in docs]
    assert len(names) == len(set(names)), "two objects of one kind and name"
    if values == "production":
        assert unvalidated == OPERATOR_KINDS  # the flags that render them are on there


def test_strict_validation_refuses_an_unknown_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(next(d for d in rendered["small"] if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_the_service_monitor_scrapes_each_kind_of_process(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Not validated against a CRD (none is served by a registry): checked for what it selects instead."""
    docs = rendered["production"]
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    services = [
        s
        for s in by_kind(docs, "Service").values()
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    jobs = {s["metadata"]["labels"][monitor["spec"]["jobLabel"]] for s in services}
    assert jobs == {"feed", "stream", "worker", "grpc", "edge"}  # the local Prometheus's job names
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for service in services:
        assert {p["name"] for p in service["spec"]["ports"]} >= endpoint_ports
        selected = [
            c
            for d, c in containers(docs)
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"{service['metadata']['name']} selects no pod"
        (service_port,) = service["spec"]["ports"]
        assert service_port["targetPort"] == "metrics"  # by name: each venue's feed serves on its own port
        for container in selected:
            port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
            venue = container_venue(container)
            assert port == (service_port["port"] if venue in (None, "kraken") else METRICS_PORTS[venue])
    (rule,) = by_kind(docs, "PrometheusRule").values()
    source = yaml.safe_load((REPO / "infra" / "prometheus" / "rules" / "cryptopredict.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"]


# --- roles and the CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_each_role_runs_a_command_the_cli_has(rendered: dict[str, list[dict[str, Any]]], values: str) -> None:
    from mlflow.cli import cli as mlflow_cli

    from workflows.worker import parse_queues

    cli = typer.main.get_command(app)
    docs = rendered[values]
    roles = set()
    for doc, container in containers(docs):
        line = command_line(container)
        assert line[:2] == ["tini", "--"], f"{doc['metadata']['name']}: not under the image's init"
        program, *args = line[2:]
        if program == "cryptopredict":
            name, *options = args
            assert name in cli.commands, f"{doc['metadata']['name']}: no command `cryptopredict {name}`"  # type: ignore[attr-defined]
            # Parses as the CLI would (unknown options and bad values fail here), without running it.
            ctx = cli.commands[name].make_context(name, list(options))  # type: ignore[attr-defined]
            if name == "worker":
                assert parse_queues(ctx.params["queues"]) == (ctx.params["queues"],)  # one queue a Deployment
                roles.add("worker")
            else:
                roles.add(name)
        elif program == "mlflow":
            name, *options = args
            ctx = mlflow_cli.commands[name].make_context(name, list(options))
            assert ctx.params["serve_artifacts"] and ctx.params["host"] == "0.0.0.0"
            roles.add("mlflow")
        elif program == "python":
            script, *rest = args
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert str(Path(script).parent) in mounts and Path(script).name == "apply_feature_store.py"
            parsed = load_script(CHART / "files" / "apply_feature_store.py").arguments().parse_args(rest)
            assert parsed.ddl.parent == Path(script).parent and parsed.ddl.name == "feature_store.sql"
            roles.add("risingwave-ddl")
        else:
            pytest.fail(f"{doc['metadata']['name']} runs {program}")
    store_job = "risingwave-ddl" if values == "production" else "migrate"
    assert roles == ROLES - ({"migrate", "risingwave-ddl"} - {store_job})


def test_a_command_the_cli_lacks_would_fail() -> None:
    cli = typer.main.get_command(app)
    with pytest.raises(Exception, match="No such option"):
        cli.commands["worker"].make_context("worker", ["--queue", "training"])  # type: ignore[attr-defined]


def test_one_worker_deployment_per_queue_and_one_feed_replica_per_pair_set(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["production"]
    values = yaml.safe_load((CHART / "values-production.yaml").read_text())
    deployments = by_kind(docs, "Deployment")
    queues = sorted(c["args"][2] for d, c in containers(docs) if c.get("args", [None])[0] == "worker")
    assert queues == ["llm", "news", "training"]
    feeds = {n: d for n, d in deployments.items() if "-feed-" in n}
    sets = {
        v: values["feed"]["pairSets"] if v == "kraken" else values["feed"][v]["pairSets"]
        for v in values["venues"]
    }
    assert values["venues"] == ["kraken", "coinbase", "binance"]  # every venue's feeds are rendered here
    assert sorted(feeds) == sorted(
        f"{RELEASE}-cryptopredict-feed-{s['name'] if v == 'kraken' else f'{v}-' + s['name']}"
        for v, venue_sets in sets.items()
        for s in venue_sets
    )
    seen: dict[str, list[str]] = {v: [] for v in sets}
    for deployment in feeds.values():
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        venue = container_venue(container)
        assert venue in sets
        pairs = json.loads(
            next(e["value"] for e in container["env"] if e["name"] == f"CRYPTOPREDICT_{venue.upper()}__PAIRS")
        )
        seen[venue] += pairs
    settings = by_kind(docs, "ConfigMap")[f"{RELEASE}-cryptopredict-settings"]["data"]
    assert json.loads(settings["CRYPTOPREDICT_VENUES"]) == values["venues"]
    for venue, venue_sets in sets.items():
        assert sorted(seen[venue]) == sorted(p for s in venue_sets for p in s["pairs"])
        # the other roles forecast them all
        assert sorted(json.loads(settings[f"CRYPTOPREDICT_{venue.upper()}__PAIRS"])) == sorted(seen[venue])
    stream = deployments[f"{RELEASE}-cryptopredict-stream"]
    assert stream["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pdbs = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in by_kind(docs, "PodDisruptionBudget").values()
    }
    assert {"stream", "grpc", "edge", "worker-training", "worker-news", "worker-llm"} <= pdbs
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-cryptopredict-edge"


# --- settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_every_settings_name_in_the_chart_is_a_setting(template: Callable[..., str], values: str) -> None:
    names = set(ENV_NAME.findall(template(values)))
    assert {"CRYPTOPREDICT_KAFKA__BOOTSTRAP_SERVERS", "CRYPTOPREDICT_KRAKEN__PAIRS"} <= names
    assert not unknown_settings(names), f"no such setting: {sorted(unknown_settings(names))}"


def test_a_misspelt_setting_fails_the_check(template: Callable[..., str]) -> None:
    assert unknown_settings({"CRYPTOPREDICT_KAFKA__BOOTSTRAP_SERVER", "CRYPTOPREDICT_KAFKA__PARTITIONS"}) == {
        "CRYPTOPREDICT_KAFKA__BOOTSTRAP_SERVER"
    }
    rendered = template("small", "--set", "settings.kafka.bootstrap_server=kafka:9092")
    assert unknown_settings(set(ENV_NAME.findall(rendered))) == {"CRYPTOPREDICT_KAFKA__BOOTSTRAP_SERVER"}


@pytest.mark.parametrize("values", VALUES)
def test_each_pod_environment_loads_as_the_settings(
    rendered: dict[str, list[dict[str, Any]]], values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Types, JSON lists and the settings' own checks (SASL_SSL with a password, min ISR, the RisingWave
    mode with a metadata server) as each process will meet them; and the ports the chart opens are the
    ones the settings serve on."""
    docs = rendered[values]
    for doc, container in containers(docs):
        if command_line(container)[2] != "cryptopredict" and "python" not in command_line(container):
            continue
        settings = load_settings(pod_environment(docs, doc, container), monkeypatch)
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        role = container["args"][0] if command_line(container)[2] == "cryptopredict" else "ddl"
        metrics = {
            "feed": "feed_port",
            "stream": "stream_port",
            "worker": "worker_port",
            "serve": "grpc_port",
            "edge": "edge_port",
        }
        if role == "feed":
            venue = container_venue(container)
            assert venue is not None and venue in settings.venues
            assert ports["metrics"] == settings.metrics.feed_metrics_port(venue)
            assert settings.metrics.host == "0.0.0.0"
        elif role in metrics:
            assert ports["metrics"] == getattr(settings.metrics, metrics[role])
            assert settings.metrics.host == "0.0.0.0"
        if role == "serve":
            assert ports["grpc"] == settings.grpc.port and settings.grpc.host == "0.0.0.0"
        if role == "edge":
            assert ports["grpc"] == settings.grpc.edge_port
            assert container["args"][4] == f"{RELEASE}-cryptopredict-grpc:{settings.grpc.port}"
            # It checks no token (the server authenticates every caller), so it holds none.
            names = {e["name"] for e in container.get("env", [])}
            assert "CRYPTOPREDICT_GRPC__TOKENS" not in names and not settings.grpc.tokens, names
        risingwave = values == "production"
        assert settings.store.dialect == ("risingwave" if risingwave else "postgres")
        assert settings.store.sink_enabled is not risingwave
        if values == "production":  # TLS everywhere
            assert settings.kafka.security_protocol == "SASL_SSL" and settings.kafka.ssl_ca_file
            assert (settings.kafka.replication_factor, settings.kafka.min_insync_replicas) == (3, 2)
            assert settings.temporal.uses_tls and settings.temporal.tls_cert_file
            assert settings.postgres.sslmode == "verify-full" and settings.postgres.ssl_root_cert
            if role in ("serve", "edge"):
                assert settings.grpc.tls_cert_file and settings.grpc.tls_key_file
            mounted = {m["mountPath"] for m in container["volumeMounts"]}
            used = [
                settings.kafka.ssl_ca_file,
                settings.temporal.tls_cert_file,
                settings.postgres.ssl_root_cert,
            ]
            if role == "edge":  # Kafka (it reads the predictions topic), neither Temporal nor a store
                used = [settings.kafka.ssl_ca_file, *filter(None, [settings.kafka.ssl_cert_file])]
                assert not [p for p in mounted if p.endswith(("/temporal-tls", "/store-ca"))], mounted
            if role in ("serve", "edge"):
                used += [settings.grpc.tls_cert_file, settings.grpc.client_ca_file]
            for path in used:
                assert path is not None and str(path.parent) in mounted, f"{role}: {path} is not mounted"


def test_production_values_reach_the_example_engines(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """values-production.yaml gives the settings that infra/engines.env says reach the engines of
    docs/kubernetes-engines.md (the same Services, users, namespaces and certificate paths)."""
    from dotenv import dotenv_values

    engines = dotenv_values(REPO / "infra" / "engines.env")
    assert engines
    settings = by_kind(rendered["production"], "ConfigMap")[f"{RELEASE}-cryptopredict-settings"]["data"]
    for name, value in engines.items():
        assert settings.get(name, "") == (value or ""), name


def test_secret_settings_are_refused_in_values(template: Callable[..., str]) -> None:
    for setting in (
        "kafka.sasl_password",
        "postgres.url",
        "postgres.metadata_url",
        "grpc.tokens",
        "llm.api_key",
    ):
        with pytest.raises(HelmError, match="is a secret"):
            template("small", "--set", f"settings.{setting}=oops")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--set", "stream.replicas=4"], "above settings.kafka.partitions"),
        (
            [
                "--set-json",
                'feed.pairSets=[{"name":"a","pairs":["BTC/USD"]},{"name":"b","pairs":["BTC/USD"]}]',
            ],
            "two sets",
        ),
        (["--set", "featureStore=risingwave"], "postgresMetadataUrl"),
        (["--set", "settings.kafka.security_protocol=SASL_SSL"], "secrets.kafkaSaslPassword"),
        (["--set", "settings.kraken.pairs={ETH/USD}"], "set by the chart"),
        (["--set", "settings.coinbase.pairs={ETH/USD}"], "set by the chart"),
        (["--set-json", 'settings.venues=["kraken"]'], "set by the chart"),
        (["--set-json", 'venues=["kraken","ftx"]'], "venues"),  # values.schema.json: the known venues
        (
            [
                "--set-json",
                'venues=["kraken","coinbase"]',
                "--set-json",
                'feed.coinbase.pairSets=[{"name":"a","pairs":["BTC/USD"]},{"name":"b","pairs":["BTC/USD"]}]',
            ],
            r"feed\.coinbase\.pairSets: BTC/USD is in two sets",
        ),
        (
            [
                "--set-json",
                'venues=["kraken","coinbase"]',
                "--set-json",
                'feed.pairSets=[{"name":"coinbase-main","pairs":["ETH/USD"]}]',
            ],
            "two feeds would be named feed-coinbase-main",
        ),
        (["--set", "featureStore=clickhouse"], "featureStore"),
        (["--set", "stream.replica=2"], "'replica' not allowed"),  # values.schema.json: the chart's own keys
    ],
)
def test_values_that_cannot_work_are_refused(
    template: Callable[..., str], change: list[str], message: str
) -> None:
    with pytest.raises(HelmError, match=message):
        template("small", *change)


# --- secrets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_the_chart_holds_no_secret(rendered: dict[str, list[dict[str, Any]]], values: str) -> None:
    docs = rendered[values]
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart makes no Secret: they are referenced"
    secret = secret_setting_names()
    assert {
        "CRYPTOPREDICT_KAFKA__SASL_PASSWORD",
        "CRYPTOPREDICT_GRPC__TOKENS",
        "CRYPTOPREDICT_TEMPORAL__API_KEY",
    } <= secret
    for configmap in by_kind(docs, "ConfigMap").values():
        assert not secret & set(configmap.get("data", {})), configmap["metadata"]["name"]
    for _, container in containers(docs):
        for entry in container.get("env", []):
            if entry["name"] in secret or "PASSWORD" in entry["name"] or entry["name"].endswith("_URL"):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{entry['name']} is not from a Secret"
    text = yaml.safe_dump_all(docs)
    assert "BEGIN" not in text.replace("BEGIN CERTIFICATE", ""), "a private key in the chart"
    assert not re.search(r"://[^/\s:@'\"]+:[^/\s@'\"]+@", text), "a URL with a password in the chart"


SECRET_KEY = re.compile(r"(password|token|api_?key|secret_?key|private_?key)$", re.I)
HIGH_ENTROPY = re.compile(r"^(?=.*\d)(?=.*[a-z])(?=.*[A-Z])[A-Za-z0-9+/=_-]{24,}$")


@pytest.mark.parametrize(
    "path", [CHART / "values.yaml", CHART / "values-production.yaml"], ids=lambda p: p.name
)
def test_no_values_file_holds_a_secret(path: Path) -> None:
    """Secrets are named ({name, key} of a Secret), never given: no literal under a secret-like key, no
    URL with a password, no key material, nothing that looks like a generated token."""
    values = yaml.safe_load(path.read_text())
    for where, value in walk(values):
        if not isinstance(value, str) or not value:
            continue
        leaf = where.rsplit(".", 1)[-1]
        assert not SECRET_KEY.search(leaf), f"{path.name}{where}: a secret value (name a Secret instead)"
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), f"{path.name}{where}: a URL with a password"
        assert "-----BEGIN" not in value, f"{path.name}{where}: key material"
        assert not HIGH_ENTROPY.match(value), f"{path.name}{where}: looks like a token"
    for name in ("kafka.sasl_password", "postgres.url", "grpc.tokens", "llm.api_key"):
        section, field = name.split(".")
        assert field not in (values.get("settings", {}).get(section) or {}), f"{path.name}: settings.{name}"


# --- the repository's files through the chart's links ---------------------------------------------------


def test_dashboards_are_the_repositorys_files(rendered: dict[str, list[dict[str, Any]]]) -> None:
    files = sorted((REPO / "infra" / "grafana" / "dashboards").glob("*.json"))
    assert files
    assert (CHART / "files" / "dashboards").is_symlink(), (
        "one copy: the chart links to infra/grafana/dashboards"
    )
    configmaps = [
        c
        for c in by_kind(rendered["small"], "ConfigMap").values()
        if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert {c["metadata"]["labels"]["grafana_dashboard"] for c in configmaps} == {"1"}
    shipped = {name: content for c in configmaps for name, content in c["data"].items()}
    assert shipped == {f.name: f.read_text().rstrip("\n") for f in files}
    for content in shipped.values():
        json.loads(content)


def test_the_ddl_job_ships_the_repositorys_ddl(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert (CHART / "files" / "feature_store.sql").is_symlink()
    (job,) = by_kind(rendered["production"], "Job").values()
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    configmap = by_kind(rendered["production"], "ConfigMap")[volume["configMap"]["name"]]
    assert int(configmap["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        hooks["helm.sh/hook-weight"]
    )
    ddl = (REPO / "infra" / "risingwave" / "feature_store.sql").read_text()
    assert configmap["data"]["feature_store.sql"] == ddl.rstrip("\n")
    script = (CHART / "files" / "apply_feature_store.py").read_text()
    assert configmap["data"]["apply_feature_store.py"] == script.rstrip("\n")
    (migrate,) = by_kind(rendered["small"], "Job").values()
    assert command_line(migrate["spec"]["template"]["spec"]["containers"][0])[2:] == [
        "cryptopredict",
        "migrate",
    ]
    assert migrate["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    settings_hook = by_kind(rendered["small"], "ConfigMap")[f"{RELEASE}-cryptopredict-hooks"]
    assert (
        settings_hook["data"]
        == by_kind(rendered["small"], "ConfigMap")[f"{RELEASE}-cryptopredict-settings"]["data"]
    )


@pytest.mark.parametrize("secret_object", [None, "kafka_password"])
@pytest.mark.parametrize("ca", ["location", "pem"])
def test_the_rendered_ddl_points_at_the_deployed_kafka_and_still_parses(
    secret_object: str | None, ca: str
) -> None:
    import sqlglot
    from sqlglot import exp

    script = load_script(CHART / "files" / "apply_feature_store.py")
    pem = "-----BEGIN CERTIFICATE-----\nMIIB'x--y;z\n-----END CERTIFICATE-----\n"
    kafka = script.KafkaAccess(
        bootstrap_servers="b-0:9093,b-1:9093",
        security_protocol="SASL_SSL",
        topic_prefix="prod-",
        username="risingwave",
        password="pa'ss;word--",
        ca_location="/etc/risingwave/kafka-ca/ca.crt" if ca == "location" else None,
        ca_pem=pem if ca == "pem" else None,
        secret_object=secret_object,
    )
    ddl = (REPO / "infra" / "risingwave" / "feature_store.sql").read_text()
    source = script.statements(ddl)
    statements = script.render(ddl, kafka)
    assert len(statements) == len(source) and len(statements) >= 8
    topics = re.findall(r"topic = '([^']+)'", "\n".join(statements))
    assert topics and all(t.startswith("prod-") for t in topics)
    assert {t.removeprefix("prod-") for t in topics} == set(re.findall(r"topic = '([^']+)'", ddl))
    for statement in statements:
        if "connector = 'kafka'" not in statement:
            continue
        assert (
            "'kafka:9092'" not in statement
            and "properties.bootstrap.server = 'b-0:9093,b-1:9093'" in statement
        )
        assert "properties.sasl.username = 'risingwave'" in statement
        if secret_object:
            assert "properties.sasl.password = secret kafka_password" in statement
            statement = statement.replace(
                "secret kafka_password", "'stands-for-the-secret'"
            )  # sqlglot lacks it
        else:
            assert "properties.sasl.password = 'pa''ss;word--'" in statement
        parsed = sqlglot.parse_one(statement, read="risingwave")
        assert not isinstance(parsed, exp.Command), statement[:80]
    shown = "\n".join(script.render(ddl, kafka, hide=True))
    assert "pa''ss" not in shown


def test_the_ddl_users_and_grants_are_plain_sql() -> None:
    script = load_script(CHART / "files" / "apply_feature_store.py")
    from cryptopredict.settings import PostgresSettings

    postgres = PostgresSettings(url="postgresql://cryptopredict:s%27ecret@risingwave-frontend:4567/dev")
    assert script.user_statements(postgres, exists=False) == [
        "CREATE USER cryptopredict WITH PASSWORD 's''ecret'"
    ]
    assert script.user_statements(postgres, exists=True, hide=True) == [
        "ALTER USER cryptopredict WITH PASSWORD '<hidden>'"
    ]
    assert all(s.endswith(" TO cryptopredict") for s in script.grant_statements(postgres))
    with pytest.raises(SystemExit):
        script.user_statements(PostgresSettings(url="postgresql://bad;name:x@h/db"), exists=False)
