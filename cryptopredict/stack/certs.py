"""A private CA and the certificates the local cluster profile needs (brokers, the Temporal TLS endpoint,
clients), made once under `<local_dir>/<profile>/certs/` and kept across restarts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cryptopredict.tls import subject_alternative_names

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


class LocalCA:
    """A CA of the project's own in `directory`: ca.crt / ca.key, and leaf certificates it signs."""

    def __init__(self, directory: Path, days: int = 825) -> None:
        self.directory = directory
        self.days = days

    @property
    def cert_file(self) -> Path:
        return self.directory / "ca.crt"

    def _load_or_make(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key_file = self.directory / "ca.key"
        if self.cert_file.exists() and key_file.exists():
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return cert, key
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("cryptopredict local CA"))
            .issuer_name(_name("cryptopredict local CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(key_file, key)
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert, key

    def leaf(self, name: str, hosts: tuple[str, ...] = LOOPBACK_NAMES, client: bool = False) -> CertFiles:
        """`<name>.crt` / `<name>.key` signed by the CA, for `hosts` (a server) or a client; made once."""
        files = CertFiles(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        if files.cert.exists() and files.key.exists():
            return files
        ca_cert, ca_key = self._load_or_make()
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name if client else hosts[0]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if not client:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(subject_alternative_names(hosts)), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(files.key, key)
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return files
