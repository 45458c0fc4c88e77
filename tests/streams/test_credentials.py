"""``faust_credentials``: KafkaSettings -> Faust SASL/TLS credentials -> aiokafka arguments.

Pure: no broker. The last hop (Faust's own ``credentials_to_aiokafka_auth``) is checked too,
so a setting that Faust would silently drop fails here rather than at a customer's broker.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import certifi
import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from streams.app import create_app, faust_credentials
from streams.settings import KafkaSettings, Settings


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A throwaway self-signed client certificate and key (PEM files)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "client.pem", d / "client.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=test",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


def _sasl(protocol: str = "SASL_PLAINTEXT", **kw: object) -> KafkaSettings:
    return KafkaSettings(
        security_protocol=protocol,
        sasl_username="svc-streamscore",
        sasl_password=SecretStr("pa55-word"),
        **kw,
    )


def test_plaintext_has_no_credentials():
    assert faust_credentials(KafkaSettings()) == {}
    assert credentials_to_aiokafka_auth(None) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism: str):
    creds = faust_credentials(_sasl(sasl_mechanism=mechanism))["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("svc-streamscore", "pa55-word")
    assert creds.mechanism.value == mechanism
    assert creds.ssl_context is None
    assert credentials_to_aiokafka_auth(creds) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc-streamscore",
        "sasl_plain_password": "pa55-word",
        "ssl_context": None,
    }


def test_sasl_ssl_verifies_the_broker_with_the_given_ca():
    settings = _sasl("SASL_SSL", sasl_mechanism="SCRAM-SHA-256", ssl_cafile=certifi.where())
    creds = faust_credentials(settings)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    ctx = creds.ssl_context
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.cert_store_stats()["x509_ca"] > 0
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert auth["ssl_context"] is ctx


def test_ssl_with_client_certificate(client_cert: tuple[str, str]):
    cert, key = client_cert
    settings = KafkaSettings(
        security_protocol="SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key
    )
    creds = faust_credentials(settings)["broker_credentials"]
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_REQUIRED
    assert creds.context.cert_store_stats()["x509_ca"] == 1
    assert credentials_to_aiokafka_auth(creds) == {
        "security_protocol": "SSL",
        "ssl_context": creds.context,
    }


def test_ssl_without_cafile_uses_the_system_trust_store():
    creds = faust_credentials(KafkaSettings(security_protocol="SSL"))["broker_credentials"]
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize(
    "missing", [{"sasl_username": None}, {"sasl_password": None}, {"sasl_username": ""}]
)
def test_sasl_without_username_or_password_is_a_clear_error(
    protocol: str, missing: dict[str, object]
):
    fields = {"sasl_username": "svc", "sasl_password": SecretStr("pw"), **missing}
    settings = KafkaSettings(security_protocol=protocol, **fields)
    with pytest.raises(ValueError, match=f"{protocol} needs sasl_username and sasl_password"):
        faust_credentials(settings)


def test_missing_tls_files_fail_at_startup(tmp_path: Path, client_cert: tuple[str, str]):
    with pytest.raises(FileNotFoundError):
        faust_credentials(
            KafkaSettings(security_protocol="SSL", ssl_cafile=str(tmp_path / "nope.pem"))
        )
    cert, _ = client_cert
    with pytest.raises(FileNotFoundError):
        faust_credentials(
            KafkaSettings(
                security_protocol="SSL", ssl_certfile=cert, ssl_keyfile=str(tmp_path / "nope.key")
            )
        )


def test_secrets_stay_out_of_reprs():
    settings = Settings(kafka=_sasl())
    creds = faust_credentials(settings.kafka)["broker_credentials"]
    assert "pa55-word" not in repr(settings)
    assert "pa55-word" not in repr(creds)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STREAMSCORE_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMSCORE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("STREAMSCORE_KAFKA__SASL_USERNAME", "svc-env")
    monkeypatch.setenv("STREAMSCORE_KAFKA__SASL_PASSWORD", "from-env")
    creds = faust_credentials(Settings().kafka)["broker_credentials"]
    assert (creds.username, creds.password) == ("svc-env", "from-env")
    assert creds.mechanism.value == "SCRAM-SHA-256"


def test_create_app_passes_the_credentials_to_faust():
    app = create_app(Settings(kafka=_sasl(sasl_mechanism="SCRAM-SHA-512")))
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.username == "svc-streamscore"
    assert creds.mechanism.value == "SCRAM-SHA-512"
