"""The status endpoint and the error envelope, as a client sees them."""

from __future__ import annotations

import httpx

from tests.support.gateway import GatewayProcess


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "code", "message", "param", "details"}
    return body["error"]


def test_status_needs_no_auth_and_reports_health(gateway: GatewayProcess, database_kind: str) -> None:
    response = httpx.get(f"{gateway.url}/v1/status")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["version"]
    assert body["database"] == {"reachable": True, "backend": "sqlite" if database_kind == "sqlite" else "postgresql"}
    assert body["uptime_s"] >= 0
    assert isinstance(body["counts"], dict)


def test_missing_and_bad_tokens_get_401_envelope(gateway: GatewayProcess) -> None:
    missing = httpx.get(f"{gateway.url}/v1/keys")
    assert missing.status_code == 401
    assert _error(missing)["code"] == "missing_api_key"
    for header in ("Bearer nope", "Basic abc", "Bearer", "jty_x"):
        response = httpx.get(f"{gateway.url}/v1/keys", headers={"Authorization": header})
        assert response.status_code == 401, header
        error = _error(response)
        assert error["type"] == "authentication_error"
        assert error["code"] == "invalid_api_key"


def test_unknown_route_is_404_and_wrong_method_405(gateway: GatewayProcess) -> None:
    with gateway.admin() as admin:
        missing = admin.get("/v1/definitely-not-here")
        wrong = admin.put("/v1/keys")
    assert missing.status_code == 404 and _error(missing)["type"] == "not_found_error"
    assert wrong.status_code == 405 and _error(wrong)["code"] == "method_not_allowed"


def test_malformed_json_is_400_never_500(gateway: GatewayProcess) -> None:
    with gateway.admin() as admin:
        truncated = admin.post("/v1/keys", content=b'{"label": ', headers={"Content-Type": "application/json"})
        not_object = admin.post("/v1/keys", content=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert truncated.status_code == 400 and _error(truncated)["type"] == "invalid_request_error"
    assert not_object.status_code == 400
    assert "Traceback" not in truncated.text + not_object.text


def test_oversized_body_is_413(start_gateway) -> None:
    gateway = start_gateway(env={"JETTY_MAX_BODY_BYTES": "2048"})
    with gateway.admin() as admin:
        response = admin.post("/v1/keys", json={"label": "x" * 5000})
    assert response.status_code == 413
    assert _error(response)["code"] == "request_too_large"


def test_openapi_schema_is_served(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/schema/openapi.json")
    assert response.status_code == 200
    assert "/v1/keys" in response.json()["paths"]


def test_request_log_has_one_line_per_request_without_secrets(gateway: GatewayProcess) -> None:
    created = gateway.create_key(label="logged")
    with gateway.client(created["key"]) as client:
        client.get("/v1/keys", params={"marker": "logline"})
    logs = gateway.logs()
    assert '"path": "/v1/keys"' in logs and '"latency_ms"' in logs
    assert created["key"] not in logs
    assert gateway.admin_token not in logs
