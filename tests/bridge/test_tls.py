"""TLS to the collector through the standard OTEL_EXPORTER_OTLP_*CERTIFICATE variables.

A self-signed CA signs the collector's (Jaeger v2's OTLP receivers) and the
client's certificates; the receivers require a client certificate (mTLS).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.servers import JaegerServer
from tests.subproc import run_profiled
from zaqar_otel.bridge import ids
from zaqar_otel.demo.stack import jaeger_config

pytestmark = pytest.mark.servers


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert(
    subject: str, key: Any, issuer: x509.Name | None, issuer_key: Any, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("zaqar-otel test CA", ca_key, None, ca_key, ca=True)
    files = {"ca": out / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"{who}.test", key, ca.subject, ca_key, ca=False)
        files[who] = out / f"{who}.pem"
        files[f"{who}_key"] = out / f"{who}.key"
        files[who].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files[f"{who}_key"])
    return {k: str(v) for k, v in files.items()}


class TLSJaeger(JaegerServer):
    """Jaeger v2 whose OTLP receivers speak TLS only and require a client certificate."""

    def __init__(self, pki: dict[str, str]) -> None:
        self.pki = pki
        super().__init__()

    def _prepare(self) -> None:
        config = jaeger_config(self.jaeger_ports, self.max_traces)
        tls = {
            "cert_file": self.pki["server"],
            "key_file": self.pki["server_key"],
            "client_ca_file": self.pki["ca"],
        }
        for protocol in config["receivers"]["otlp"]["protocols"].values():
            protocol["tls"] = tls
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")


@pytest.fixture(scope="module")
def tls_jaeger(pki: dict[str, str]):
    server = TLSJaeger(pki).start()
    yield server
    server.close()


def _client_env(pki: dict[str, str]) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_CERTIFICATE": pki["ca"],
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": pki["client"],
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": pki["client_key"],
    }


def test_otlp_http_over_mutual_tls(tls_jaeger, pki):
    port = tls_jaeger.jaeger_ports.otlp_http
    result = run_profiled(
        "--force-flush",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{port}",
            # set on many machines; must not override OTEL_EXPORTER_OTLP_CERTIFICATE
            "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
            **_client_env(pki),
        },
    )
    [base] = result["base_ids"]
    trace = tls_jaeger.wait_for_trace(ids.trace_hex(base), 2)
    assert len(tls_jaeger.trace_spans(trace)) == 2
    assert result["status"]["export_failed"] == 0


def test_otlp_grpc_over_mutual_tls_from_the_connection_string(tls_jaeger, pki):
    port = tls_jaeger.jaeger_ports.otlp_grpc
    result = run_profiled(
        "--connection-string", f"otel://127.0.0.1:{port}?protocol=grpc&tls=true",
        env=_client_env(pki),
    )  # fmt: skip
    [base] = result["base_ids"]
    trace = tls_jaeger.wait_for_trace(ids.trace_hex(base), 2)
    assert len(tls_jaeger.trace_spans(trace)) == 2


def test_an_untrusted_collector_gets_nothing_and_the_app_runs_on(tls_jaeger, pki):
    port = tls_jaeger.jaeger_ports.otlp_http
    result = run_profiled(
        "--requests", "3", "--force-flush",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        },
    )  # fmt: skip
    assert len(result["base_ids"]) == 3
    assert result["status"]["exported"] == 0
    assert result["status"]["export_failed"] == 6
    assert result["stderr"].count("cannot export spans") == 1
    for base in result["base_ids"]:
        assert tls_jaeger.get_trace(ids.trace_hex(base)) is None
