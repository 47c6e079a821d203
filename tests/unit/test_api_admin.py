"""The administration requests parsed at the edge: clear 400s naming the parameter."""

from __future__ import annotations

import datetime

import pytest

from appliance.api.admin import (
    parse_audit_query,
    parse_forget_user,
    parse_key_create,
    parse_since,
)
from appliance.errors import InvalidRequest

PRESETS = ("clinic", "default")


def test_a_key_with_every_field() -> None:
    k = parse_key_create({"name": "ward-3", "scopes": ["chat"], "rpm": 60, "tpm": None,
                          "max_concurrent": 2, "priority": 1, "expires_at": 1.9e9,
                          "policy": "clinic"}, PRESETS)
    assert (k.name, k.scopes, k.priority, k.expires_at, k.policy) == (
        "ward-3", ("chat",), 1, 1.9e9, "clinic")
    assert k.limits == {"rpm": 60, "tpm": None, "burst_requests": None,
                        "burst_tokens": None, "max_concurrent": 2}
    default = parse_key_create({"name": "x"}, PRESETS)
    assert default.scopes == ("chat", "embeddings", "memory") and default.policy is None


@pytest.mark.parametrize(("body", "param"), [
    ({"scopes": ["chat"]}, "name"),
    ({"name": "x", "scopes": "chat"}, "scopes"),
    ({"name": "x", "rpm": 1.5}, "rpm"),
    ({"name": "x", "tpm": True}, "tpm"),
    ({"name": "x", "expires_at": "tomorrow"}, "expires_at"),
    ({"name": "x", "policy": "policies/evil.toml"}, "policy"),
    ({"name": "x", "secret": "sk-appl-mine"}, "secret"),
])
def test_bad_key_bodies(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_key_create(body, PRESETS)
    assert exc.value.param == param


def test_since_takes_unix_time_or_iso_dates() -> None:
    assert parse_since(None) is None and parse_since("") is None
    assert parse_since("1700000000") == 1.7e9
    utc = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC).timestamp()
    assert parse_since("2026-11-01") == utc
    assert parse_since("2026-11-01T01:00:00+01:00") == utc
    with pytest.raises(InvalidRequest):
        parse_since("last week")


def test_audit_query_and_user() -> None:
    q = parse_audit_query({"limit": "5", "event": "guard."})
    assert (q.limit, q.since, q.event) == (5, None, "guard.")
    assert parse_audit_query({}).limit == 100
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"event": "x" * 65}):
        with pytest.raises(InvalidRequest):
            parse_audit_query(bad)
    assert parse_forget_user({"user": "u1"}) == "u1"
    for bad_user in ({}, {"user": ""}, {"user": "u" * 257}):
        with pytest.raises(InvalidRequest):
            parse_forget_user(bad_user)
