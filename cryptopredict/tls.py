"""A self-signed certificate for serving gRPC over TLS on a host without a CA (`cryptopredict tls-cert`).

Clients trust it by using the certificate itself as their CA bundle (settings.grpc.tls_ca_file, or
grpcurl's `-cacert`). Production deployments put a CA-issued certificate in the same two settings.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


def subject_alternative_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    """IP addresses as IP entries, everything else as DNS names."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def self_signed_certificate(hosts: tuple[str, ...] = DEFAULT_HOSTS, days: int = 365) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) valid for `hosts` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.now(UTC)
    alternative_names = subject_alternative_names(hosts)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        # A CA of itself: gRPC's TLS stack accepts a self-signed leaf as its own root only then.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def write_self_signed(directory: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> tuple[Path, Path]:
    """Writes server.crt and server.key (readable by the owner only) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed_certificate(hosts)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert_pem)
    key_path.touch(mode=0o600)
    key_path.write_bytes(key_pem)
    return cert_path, key_path
