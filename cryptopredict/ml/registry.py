"""Model registry lifecycle on MLflow: versions, the `champion` and `challenger` aliases, promotions
with their reasons, and rollbacks.

Serving follows the `champion` alias. Every promotion appends the version to the registered model's
`champion_history` tag (oldest first), so a rollback knows which version held the title before; the
alias itself keeps no history. All functions take an explicit `MlflowClient` so callers choose the
tracking server and nothing depends on global MLflow state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

from cryptopredict.models import ModelRef

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
# The model family of a version ("persistence", "linear", "xgboost"), read by serving as its flavor.
KIND_TAG = "kind"
# Registry tag values are bounded; rollback needs only the recent past.
HISTORY_LIMIT = 500
PERSISTENCE_REASON = "first champion: persistence baseline"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _model_id(model_uri: str) -> str | None:
    """The logged-model id of a `models:/<model_id>` URI (what MLflow 3's log_model returns), which
    links the version to its logged model; None for runs:/ and registered-model URIs."""
    prefix = "models:/"
    if not model_uri.startswith(prefix):
        return None
    rest = model_uri[len(prefix) :]
    return None if "/" in rest or "@" in rest else rest


def register_version(
    client: MlflowClient, model_uri: str, name: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """A new version of `name` (created on first use) from a logged model's URI. Safe to retry: when a
    version of the same model URI and run exists (an activity that failed after registering), that one
    is returned instead of a duplicate."""
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    for existing in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        if existing.source == model_uri:
            return existing
    return client.create_model_version(
        name, source=model_uri, run_id=run_id, tags=tags, model_id=_model_id(model_uri)
    )


def champion_alias(client: MlflowClient, name: str) -> str | None:
    """The number of the version serving now, or None when the model or its champion does not exist yet.
    Read from the registered model's alias map: servers report a missing alias with different error codes
    (INVALID_PARAMETER_VALUE over REST), a missing model consistently."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = model.aliases.get(CHAMPION)
    return None if version is None else str(version)


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version serving now, or None when the model or its champion does not exist yet."""
    version = champion_alias(client, name)
    return None if version is None else client.get_model_version(name, version)


@dataclass(frozen=True)
class VersionSummary:
    """What a client is told about a registered version: origin, offline test metrics, why it holds its alias."""

    version: str
    kind: str
    run_id: str | None
    created_at: datetime
    test_metrics: dict[str, float]
    reason: str


@dataclass(frozen=True)
class AliasedVersions:
    name: str
    champion: VersionSummary | None
    challenger: VersionSummary | None


def aliased_versions(client: MlflowClient, name: str) -> AliasedVersions | None:
    """The versions holding `champion` and `challenger`, or None when the model is not registered."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    summaries = {
        alias: _summary(client.get_model_version(name, str(version)))
        for alias, version in model.aliases.items()
        if alias in (CHAMPION, CHALLENGER)
    }
    return AliasedVersions(name, summaries.get(CHAMPION), summaries.get(CHALLENGER))


def _summary(version: ModelVersion) -> VersionSummary:
    tags = version.tags or {}
    metrics = {}
    for key, value in tags.items():
        # register_challenger stores the test metrics as `test_<name>` tags (strings: tags are text).
        if key.startswith("test_"):
            try:
                metrics[key.removeprefix("test_")] = float(value)
            except ValueError:
                continue
    if "rejection_reasons" in tags:
        reason = "; ".join(json.loads(tags["rejection_reasons"]))
    else:
        reason = tags.get("promotion_reason", "")
    return VersionSummary(
        version=str(version.version),
        kind=tags.get(KIND_TAG, ""),
        run_id=version.run_id,
        created_at=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
        test_metrics=metrics,
        reason=reason,
    )


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """Versions that held `champion`, oldest first; the last one is the current champion."""
    value = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in value.split(",") if v]


def _set_history(client: MlflowClient, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[-HISTORY_LIMIT:]))


def promote(client: MlflowClient, name: str, version: str, reason: str) -> None:
    """Makes `version` the champion. Safe to retry: promoting the current champion changes nothing, and a
    promotion interrupted after writing the history does not append the version twice (a duplicate
    would make the next rollback a no-op)."""
    version = str(version)
    current = current_champion(client, name)
    if current is not None and str(current.version) == version:
        return
    target = client.get_model_version(name, version)
    client.set_model_version_tag(name, version, "promoted_at", _now())
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    history = champion_history(client, name)
    if history[-1:] != [version]:
        _set_history(client, name, [*history, version])
    client.set_registered_model_alias(name, CHAMPION, version)
    if CHALLENGER in (target.aliases or []):
        client.delete_registered_model_alias(name, CHALLENGER)


def mark_challenger(client: MlflowClient, name: str, version: str, reasons: list[str]) -> None:
    """Names `version` the challenger, with why it was not promoted; a newer challenger replaces it."""
    client.set_model_version_tag(name, str(version), "rejection_reasons", json.dumps(reasons))
    client.set_registered_model_alias(name, CHALLENGER, str(version))


def rollback(client: MlflowClient, name: str, expected: str | None = None) -> tuple[str, str]:
    """Returns the champion title to the version that held it before the current one; returns
    (from_version, to_version). With `expected`, the rollback of champion v`expected`: retried after it
    took effect (a command run again, an interrupted call), it completes it or changes nothing, instead
    of rolling back a second version. Refuses when there is nothing to go back to, when the champion is
    another version, or when the alias was moved outside these functions (the history would then not
    say what "before" means)."""
    current = current_champion(client, name)
    if current is None:
        raise ValueError(f"{name} has no champion to roll back")
    history = champion_history(client, name)
    from_version = str(current.version)
    if expected is not None and from_version != expected:
        marked = "rolled_back_at" in (client.get_model_version(name, expected).tags or {})
        if marked and expected not in history:
            return expected, from_version  # rolled back already
        raise ValueError(f"{name}: the champion is v{from_version}, not v{expected}: nothing rolled back")
    if expected is not None and history and history[-1] != from_version:
        to_version = history[-1]  # interrupted after the history lost it: finish
    elif not history or history[-1] != from_version:
        raise ValueError(
            f"{name}: champion v{from_version} is not the last entry of {HISTORY_TAG} {history}; "
            "the alias was moved outside the registry functions, so the previous champion is unknown"
        )
    elif len(history) < 2:
        raise ValueError(f"{name}: v{from_version} is the first champion, there is no previous one")
    else:
        to_version = history[-2]
        _set_history(client, name, history[:-1])
    # The history and the mark first, the alias last: a retry keyed by `expected` finds how far the
    # interrupted call got.
    client.set_model_version_tag(name, from_version, "rolled_back_at", _now())
    client.set_registered_model_alias(name, CHAMPION, to_version)
    return from_version, to_version


def ensure_persistence_champion(
    client: MlflowClient,
    name: str,
    log_persistence: Callable[[], tuple[str, str]],
    *,
    kind: str = "persistence",
    reason: str = PERSISTENCE_REASON,
) -> ModelVersion:
    """The current champion; when there is none, the baseline becomes the first one, so serving always
    has a model and every later candidate has a bar to clear. `log_persistence` logs the baseline (the
    persistence model, or `kind` "naive" for a volatility target) in a run and returns (model_uri,
    run_id); it is only called when needed."""
    champion = current_champion(client, name)
    if champion is not None:
        return champion
    model_uri, run_id = log_persistence()
    version = register_version(client, model_uri, name, run_id, {KIND_TAG: kind})
    promote(client, name, str(version.version), reason)
    return client.get_model_version(name, str(version.version))


def model_ref(version: ModelVersion, alias: str | None) -> ModelRef:
    """The domain reference to a registry version that workflows and events pass around; its flavor is
    the version's `kind` tag."""
    return ModelRef(
        name=version.name,
        version=str(version.version),
        alias=alias,
        run_id=version.run_id,
        flavor=(version.tags or {}).get(KIND_TAG, ""),
    )
