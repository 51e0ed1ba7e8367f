"""Real upstreams speak HTTPS: the relay verifies and uses TLS against a local CA."""

from __future__ import annotations

import datetime
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from openai import OpenAI

from tests.support.gateway import GatewayProcess

COMPLETION = {
    "id": "chatcmpl-tls",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "over TLS"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None, issuer_key, *, ca: bool):  # noqa: ANN001, ANN202
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
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
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("jetty test CA", ca_key, None, ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("localhost", leaf_key, ca.subject, ca_key, ca=False)
    files = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("stream"):
            chunks = [
                {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                 "choices": [{"index": 0, "delta": {"content": part}, "finish_reason": None}]}
                for part in ("over", " TLS")
            ]
            payload = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
            content_type = "text/event-stream"
        else:
            payload = json.dumps(COMPLETION).encode()
            content_type = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_upstream(tls_files: dict[str, Path]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/v1"
    server.shutdown()


def _gateway(start_gateway, tmp_path: Path, api_base: str, ca: Path | None) -> GatewayProcess:  # noqa: ANN001
    models = tmp_path / "models.yaml"
    models.write_text(
        f'model_list:\n  - model_name: secure\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{api_base}", api_key: sk-tls-test-0123456789}}\n'
    )
    env = {"JETTY_MODELS_FILE": str(models), "JETTY_UPSTREAM_MAX_RETRIES": "0"}
    if ca is not None:
        env["SSL_CERT_FILE"] = str(ca)
    return start_gateway(env=env)


def test_https_upstream_plain_and_streamed(start_gateway, tmp_path: Path, https_upstream: str, tls_files: dict[str, Path]) -> None:  # noqa: ANN001
    gateway = _gateway(start_gateway, tmp_path, https_upstream, tls_files["ca"])
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.admin_token, max_retries=0, timeout=30)
    reply = client.chat.completions.create(model="secure", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "over TLS"
    stream = client.chat.completions.create(model="secure", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "over TLS"


def test_untrusted_certificate_is_refused_with_502(start_gateway, tmp_path: Path, https_upstream: str) -> None:  # noqa: ANN001
    gateway = _gateway(start_gateway, tmp_path, https_upstream, None)
    with gateway.admin() as http_client:
        response = http_client.post("/v1/chat/completions", json={"model": "secure", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
