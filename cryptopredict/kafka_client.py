"""How every Kafka client of the project connects: one place that turns `KafkaSettings` into client
arguments (aiokafka producers, consumers and admin clients) and Faust broker credentials."""

from __future__ import annotations

import ssl
from typing import Any

from cryptopredict.settings import KafkaSettings


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """A TLS context checking the brokers against `ssl_ca_file` (or the system's roots), presenting the
    client certificate when one is set; None for PLAINTEXT."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(
        cafile=str(kafka.ssl_ca_file) if kafka.ssl_ca_file is not None else None
    )
    if kafka.ssl_cert_file is not None and kafka.ssl_key_file is not None:
        context.load_cert_chain(str(kafka.ssl_cert_file), str(kafka.ssl_key_file))
    return context


def client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: bootstrap servers and the security settings."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(kafka)
    if context is not None:
        kwargs["ssl_context"] = context
    if kafka.security_protocol == "SASL_SSL":
        assert kafka.sasl_password is not None  # KafkaSettings refuses SASL_SSL without one
        kwargs |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": kafka.sasl_password.get_secret_value(),
        }
    return kwargs


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Faust's `broker_credentials` for the same settings (None for PLAINTEXT)."""
    import faust
    from faust.types.auth import SASLMechanism

    context = ssl_context(kafka)
    if kafka.security_protocol == "SASL_SSL":
        assert kafka.sasl_password is not None and kafka.sasl_username is not None
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=SASLMechanism(kafka.sasl_mechanism),
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
