"""Secret redaction: what is scrubbed before storage, and what is left alone."""

from __future__ import annotations

import pytest

from gateway.redaction import redact_secrets


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("use sk-proj-abcdefghijklmnopqrstuvwx please", "api_key"),
        ("anthropic sk-ant-api03-abcdefghijklmnopqrstuv", "api_key"),
        ("gateway key jty_AbCdEfGhIjKlMnOpQrStUvWxYz012345", "api_key"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "api_key"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "api_key"),
        ("Authorization: Bearer abc.def-ghi_jkl~mno", "bearer_token"),
        ("password: hunter2hunter2", "password"),
        ('{"api_key": "s3cr3tvalue"}', "password"),
        ("card 4111 1111 1111 1111 exp 12/30", "card_number"),
        ("card 5500-0000-0000-0004", "card_number"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt"),
    ],
)
def test_secret_shapes_are_redacted_and_listed(text: str, kind: str) -> None:
    cleaned, found = redact_secrets({"messages": [{"role": "user", "content": text}]})
    content = cleaned["messages"][0]["content"]
    assert f"[REDACTED:{kind}]" in content
    assert {"kind": kind, "path": "messages[0].content"} in found
    for word in text.split():
        if len(word) > 12 and any(c.isdigit() for c in word):
            assert word not in content


def test_known_secrets_are_redacted_anywhere_without_listing_the_value() -> None:
    cleaned, found = redact_secrets({"a": ["x upstream-key-123 y"], "b": {"c": "upstream-key-123"}}, ["upstream-key-123"])
    assert cleaned == {"a": ["x [REDACTED:secret] y"], "b": {"c": "[REDACTED:secret]"}}
    assert found == [{"kind": "secret", "path": "a[0]"}, {"kind": "secret", "path": "b.c"}]
    assert "upstream-key-123" not in repr(found)


def test_secret_named_fields_are_blanked() -> None:
    cleaned, found = redact_secrets({"headers": {"Authorization": "Basic Zm9vOmJhcg==", "Accept": "json"}})
    assert cleaned["headers"] == {"Authorization": "[REDACTED:secret_field]", "Accept": "json"}
    assert found == [{"kind": "secret_field", "path": "headers.Authorization"}]


def test_ordinary_content_is_untouched() -> None:
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Order 1234567890123 shipped; call 555-0100; the task-id is abc"}],
    }
    cleaned, found = redact_secrets(body)
    assert cleaned == body
    assert found == []
