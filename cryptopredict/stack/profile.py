"""The local cluster profile's secrets, made once by the launcher under `<local_dir>/cluster/`.

`infra/profiles/cluster.env` (committed) holds no secrets; `<local_dir>/cluster/secrets.env` (mode 0600,
read after it) holds the SCRAM password, the Temporal API key and the absolute paths of the certificates
of the project's own CA in `<local_dir>/cluster/certs/`. Deleting the directory starts over with new
secrets (and needs the Kafka cluster's data deleted too: its SCRAM user was made with the old password).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptopredict.settings import Settings, configured_local_dir, load_settings
from cryptopredict.stack.certs import LocalCA

CLUSTER = "cluster"
# Leaf certificates of the cluster CA: the Temporal TLS relay (a server on loopback) and its client.
TEMPORAL_RELAY_CERT = "temporal-relay"
TEMPORAL_CLIENT_CERT = "temporal-client"


def cluster_dir(local_dir: Path) -> Path:
    return local_dir.expanduser().resolve() / CLUSTER


def cluster_ca(local_dir: Path) -> LocalCA:
    """The CA of the cluster profile: brokers, the Temporal relay and the clients use its certificates."""
    return LocalCA(cluster_dir(local_dir) / "certs")


def secrets_file(local_dir: Path) -> Path:
    return cluster_dir(local_dir) / "secrets.env"


def ensure_cluster_secrets(local_dir: Path) -> Path:
    """`<local_dir>/cluster/secrets.env`, made on first use (with the certificates it names) and then kept."""
    path = secrets_file(local_dir)
    ca = cluster_ca(local_dir)
    # Leaves are made once each; asking again only returns the files (a deleted one is made again).
    ca.leaf(TEMPORAL_RELAY_CERT)
    client = ca.leaf(TEMPORAL_CLIENT_CERT, client=True)
    if path.exists():
        return path
    values = {
        "CRYPTOPREDICT_KAFKA__SASL_PASSWORD": secrets.token_urlsafe(24),
        "CRYPTOPREDICT_KAFKA__SSL_CA_FILE": ca.cert_file,
        "CRYPTOPREDICT_TEMPORAL__TLS_CA_FILE": ca.cert_file,
        "CRYPTOPREDICT_TEMPORAL__TLS_CERT_FILE": client.cert,
        "CRYPTOPREDICT_TEMPORAL__TLS_KEY_FILE": client.key,
        "CRYPTOPREDICT_TEMPORAL__API_KEY": secrets.token_urlsafe(32),
    }
    text = "# Made by `cryptopredict stack up --profile cluster`; secret, keep private.\n"
    text += "".join(f"{key}={value}\n" for key, value in values.items())
    draft = path.with_name(f".secrets.env.{os.getpid()}")
    draft.touch(mode=0o600)
    draft.write_text(text)
    # A hard link fails when the file exists: of two launchers starting at once, one writes it.
    with contextlib.suppress(FileExistsError):
        os.link(draft, path)
    draft.unlink()
    return path


def read_secrets(local_dir: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(ensure_cluster_secrets(local_dir)).items() if v is not None}


def load_profile_settings(profile: str | None) -> Settings:
    """`load_settings(profile)` (default: CRYPTOPREDICT_PROFILE), making the cluster profile's secrets
    first when they do not exist yet."""
    profile = profile if profile is not None else os.environ.get("CRYPTOPREDICT_PROFILE") or None
    if profile == CLUSTER:
        ensure_cluster_secrets(configured_local_dir())
    return load_settings(profile)
