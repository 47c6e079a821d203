"""The endpoints the console needs, over HTTP against the real server: who am I, API keys,
the audit log, storage, the cache, forgetting a user, the guard policy; the x_appliance field
that tells a client about redaction and topic answers (and that the official openai client
ignores); the console's pages and their headers."""

from __future__ import annotations

import time

import openai
import pytest

from tests.conftest import make_settings, start_server
from tests.console.conftest import ConsoleServer
from tests.console.http import call

pytestmark = pytest.mark.model


def test_me_names_the_key_and_its_scopes(console_server: ConsoleServer) -> None:
    s = console_server
    me = call(s.url, "GET", "/v1/me", s.staff).json()
    assert me["name"] == "staff" and me["scopes"] == ["chat", "memory"]
    assert me["open_access"] is False and me["policy"] == "clinic"
    assert me["key"].startswith("sk-appl-...") and s.staff not in str(me)
    assert call(s.url, "GET", "/v1/me").status == 401
    assert call(s.url, "GET", "/v1/me", "sk-appl-" + "x" * 43).status == 401


def test_admin_endpoints_need_the_admin_scope(console_server: ConsoleServer) -> None:
    s = console_server
    for method, path in (("GET", "/v1/admin/keys"), ("POST", "/v1/admin/keys"),
                         ("DELETE", "/v1/admin/keys/admin"), ("GET", "/v1/admin/audit"),
                         ("GET", "/v1/admin/audit/verify"), ("GET", "/v1/admin/audit/export"),
                         ("GET", "/v1/admin/storage"), ("DELETE", "/v1/admin/cache"),
                         ("DELETE", "/v1/admin/memory?user=u"), ("GET", "/v1/admin/policy")):
        r = call(s.url, method, path, s.staff, body={} if method == "POST" else None)
        assert r.status == 403, (method, path, r.status)
        assert r.json()["error"]["code"] == "insufficient_scope"
        assert call(s.url, method, path).status == 401


def test_key_lifecycle_is_audited_and_revocation_is_immediate(
        console_server: ConsoleServer) -> None:
    s = console_server
    created = call(s.url, "POST", "/v1/admin/keys", s.admin, {
        "name": "nurse-api", "scopes": ["chat"], "rpm": 30, "max_concurrent": 2,
        "policy": "clinic", "expires_at": time.time() + 86400})
    assert created.status == 201, created.body
    key = created.json()
    secret = key["secret"]
    assert secret.startswith("sk-appl-") and key["state"] == "active"
    assert key["scopes"] == ["chat"] and key["rpm"] == 30 and key["policy"] == "clinic"
    listed = call(s.url, "GET", "/v1/admin/keys", s.admin).json()["data"]
    mine = next(k for k in listed if k["name"] == "nurse-api")
    assert "secret" not in mine and mine["key"].endswith(secret[-4:])
    assert call(s.url, "GET", "/v1/me", secret).json()["name"] == "nurse-api"
    # a duplicate name, a bad scope, a policy file path: clear 400s
    for bad, param in (({"name": "nurse-api"}, "name"),
                       ({"name": "x1", "scopes": ["root"]}, "scopes"),
                       ({"name": "x2", "policy": "/etc/passwd"}, "policy"),
                       ({"name": "x3", "rpm": "many"}, "rpm"),
                       ({"name": "x4", "colour": "red"}, "colour"),
                       ({"name": "x5", "expires_at": 2.2e139}, "expires_at"),
                       ({"name": "x6", "rpm": 2**63}, "rpm"),
                       ({"name": "x7", "priority": 2**63}, "priority")):
        r = call(s.url, "POST", "/v1/admin/keys", s.admin, bad)
        assert r.status == 400 and r.json()["error"]["param"] == param, (bad, r.body)
    revoked = call(s.url, "DELETE", "/v1/admin/keys/nurse-api", s.admin)
    assert revoked.status == 200 and revoked.json()["state"] == "revoked"
    assert call(s.url, "GET", "/v1/me", secret).status == 401  # at once, no cache delay
    assert call(s.url, "DELETE", "/v1/admin/keys/nurse-api", s.admin).status == 404
    events = call(s.url, "GET", "/v1/admin/audit?event=key.&limit=10", s.admin).json()["data"]
    mine = [e for e in events if e["detail"].get("name") == "nurse-api"]
    assert [e["event"] for e in mine] == ["key.revoke", "key.create"]  # newest first
    assert all(e["actor"] == "key:admin" for e in mine)
    assert secret not in str(events)


def test_audit_verify_export_and_bad_queries(console_server: ConsoleServer) -> None:
    s = console_server
    v = call(s.url, "GET", "/v1/admin/audit/verify", s.admin).json()
    assert v["ok"] is True and v["records"] >= 2 and len(v["head"]["hash"]) == 64
    export = call(s.url, "GET", "/v1/admin/audit/export?since=2020-01-01", s.admin)
    assert export.status == 200
    assert export.headers["Content-Type"] == "application/x-ndjson"
    assert "attachment" in export.headers["Content-Disposition"]
    lines = export.body.decode().splitlines()
    assert len(lines) == v["records"] and all(line.startswith("{") for line in lines)
    future = call(s.url, "GET", "/v1/admin/audit/export?since=2999-01-01", s.admin)
    assert future.status == 200 and future.body == b""
    for query, param in (("limit=0", "limit"), ("limit=x", "limit"), ("since=soon", "since")):
        r = call(s.url, "GET", f"/v1/admin/audit?{query}", s.admin)
        assert r.status == 400 and r.json()["error"]["param"] == param


def test_storage_cache_clear_and_forget_a_user_under_every_key(
        console_server: ConsoleServer) -> None:
    s = console_server
    for key in (s.admin, s.staff):
        r = call(s.url, "POST", "/v1/memory", key,
                 {"scope": "user", "user": "patient-7", "content": "Prefers mornings."})
        assert r.status == 200, r.body
    before = call(s.url, "GET", "/v1/admin/storage", s.admin).json()
    assert before["memory"]["entries"]["user"] >= 2 and before["database"]["bytes"] > 0
    assert before["cache"]["enabled"] is False and before["cache"]["entries"] == 0
    assert call(s.url, "DELETE", "/v1/admin/memory", s.admin).status == 400
    gone = call(s.url, "DELETE", "/v1/admin/memory?user=patient-7", s.admin).json()
    assert gone == {"object": "memory.deleted", "user": "patient-7", "deleted": 2,
                    "all_keys": True}
    left = call(s.url, "GET", "/v1/memory?scope=user&user=patient-7", s.staff).json()
    assert left["data"] == []
    cleared = call(s.url, "DELETE", "/v1/admin/cache", s.admin).json()
    assert cleared == {"object": "cache.cleared", "deleted": 0}
    events = [e["event"] for e in call(s.url, "GET", "/v1/admin/audit?limit=5",
                                       s.admin).json()["data"]]
    assert events[:2] == ["cache.clear", "memory.forget_user"]


def test_policy_in_force_and_presets(console_server: ConsoleServer) -> None:
    s = console_server
    p = call(s.url, "GET", "/v1/admin/policy", s.admin).json()
    assert p["name"] == "default" and p["server_default"] is True
    assert set(p["presets"]) >= {"default", "clinic"}
    assert p["rules"]["pii"]["email"] == "redact"
    assert p["classifiers"]["content-safety"]["action"] == "block"
    clinic = call(s.url, "GET", "/v1/admin/policy?name=clinic", s.admin).json()
    assert clinic["server_default"] is False
    assert clinic["classifiers"]["content-safety"]["categories"] == {"S6": "allow"}
    assert [t["name"] for t in clinic["topics"]] == ["emergency"]
    assert {r["name"] for r in clinic["output"]["rules"]} == {"diagnosis-statement",
                                                             "dose-instruction"}
    assert call(s.url, "GET", "/v1/admin/policy?name=../x", s.admin).status == 400


def test_x_appliance_says_what_was_redacted_and_openai_clients_ignore_it(
        console_server: ConsoleServer) -> None:
    s = console_server
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=s.staff, max_retries=0)
    question = "My e-mail is jane.doe@example.com. What is a fever?"
    r = client.chat.completions.create(model="default", max_tokens=4, temperature=0,
                                       messages=[{"role": "user", "content": question}])
    assert r.choices[0].message.content is not None
    extra = (r.model_extra or {})["x_appliance"]
    assert extra == {"input_redacted": "My e-mail is [EMAIL]. What is a fever?"}
    chunks = list(client.chat.completions.create(
        model="default", max_tokens=4, temperature=0, stream=True,
        messages=[{"role": "user", "content": question}]))
    firsts = [(c.model_extra or {}).get("x_appliance") for c in chunks]
    assert firsts[0] == extra and not any(firsts[1:])
    plain = client.chat.completions.create(model="default", max_tokens=2, temperature=0,
                                           messages=[{"role": "user", "content": "Hi"}])
    assert "x_appliance" not in (plain.model_extra or {})


def test_x_appliance_names_the_topic_that_answered(console_server: ConsoleServer) -> None:
    s = console_server
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=s.staff, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="default", max_tokens=32, stream=True,
        messages=[{"role": "user", "content": "I have crushing chest pain right now"}]))
    assert (chunks[0].model_extra or {})["x_appliance"] == {"topic": "emergency"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "emergency number" in text


def test_console_pages_and_headers(console_server: ConsoleServer) -> None:
    s = console_server
    page = call(s.url, "GET", "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    script = call(s.url, "GET", "/console/app.js", headers={"Accept-Encoding": "gzip"})
    assert script.headers["Content-Encoding"] == "gzip"
    assert script.headers["Content-Type"].startswith("text/javascript")
    again = call(s.url, "GET", "/console/app.js",
                 headers={"If-None-Match": script.headers["ETag"]})
    assert again.status == 304 and again.body == b""
    missing = call(s.url, "GET", "/console/nope.js")
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
    assert call(s.url, "GET", "/console/..%2Fconfig.py").status == 404


def test_console_off_and_open_access(tmp_path_factory: pytest.TempPathFactory) -> None:
    """--console false answers 404 under /; with no keys /v1/me says open access and how
    to create the first key."""
    settings = make_settings(tmp_path_factory.mktemp("off"), console=False, parallel=1,
                             ctx_size=256, guards=False)
    srv = start_server(settings, wait=False)
    try:
        r = call(srv.base_url, "GET", "/")
        assert r.status == 404 and "console" in r.json()["error"]["message"]
        me = call(srv.base_url, "GET", "/v1/me").json()
        assert me["open_access"] is True and set(me["scopes"]) == {"chat", "embeddings",
                                                                  "memory", "admin"}
        assert me["create_key_command"].startswith("appliance keys create --name admin")
        assert str(settings.data_dir) in me["create_key_command"]
    finally:
        srv.close()
