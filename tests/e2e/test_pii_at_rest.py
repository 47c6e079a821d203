"""No raw PII at rest: every PII kind the rules know, planted in every field a client
controls, against the real server started through the CLI with a key, bound to every
address, under the clinic policy (it has record patterns), with content logging off and on.
Then the log (the process's whole stderr), the SQLite files (``.db``, ``-wal`` and
``-shm``, read as raw bytes, while it runs and after it stopped) and the vector index files
are searched for every planted value: nothing raw anywhere.

The fields: chat message content, a completion prompt, memory content, the ``user`` of a
chat and of a memory, the session (``X-Session-Id`` header, ``session_id`` in a chat body
and in a memory body), ``X-Request-Id``, ``X-Cache-Scope``, the URL query and path, the
``Authorization`` header, ``/v1/embeddings`` and ``/v1/guard`` input, and requests aiohttp
cannot parse (request line, header names and values, Content-Length, chunk sizes).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from appliance.observability.redaction import Scrubber
from tests.conftest import free_port
from tests.e2e.test_deployment import APPLIANCE, CliServer, create_key, start_cli

pytestmark = pytest.mark.model

PII = {  # kind -> the value as planted
    "email": "jane.roe@example.org",
    "phone": "(415) 555-0132",
    "card": "4539 1488 0343 6467",  # Luhn-valid
    "ssn": "536-22-8741",
    "iban": "DE89 3704 0044 0532 0130 00",  # mod-97 valid
    "ip": "203.0.113.77",
    "dob": "1984-03-15",
    "record": "MRN 48213377",  # the clinic policy's record pattern
    "secret": "AKIA4HX2KQ7ZP3MWN5RT",
}
SAID = {"dob": "born on {}", "record": "chart {}", "secret": "the AWS key is {}"}
# As an X-Request-Id: each kind in plain characters, in the form the rules recognise (to
# them a bare date is no date of birth and a bare digit run no phone number, in a request
# id as in a message).
AS_ID = {"email": "jane.roe@example.org", "phone": "415-555-0132", "card": "4539148803436467",
         "ssn": "536-22-8741", "iban": "DE89370400440532013000", "ip": "203.0.113.77",
         "dob": "DOB-1984-03-15", "record": "MRN48213377", "secret": "AKIA4HX2KQ7ZP3MWN5RT"}
# Searched for: each value as planted, and its compact form (digits without separators).
NEEDLES = sorted({*PII.values(), "555-0132", "4155550132", "4539148803436467", "536228741",
                  "DE89370400440532013000", "48213377"})
MARKER = "Zanzibar"  # plain text, not PII: stored as memory; logged only with content on
HEX64 = re.compile(r"[0-9a-f]{64}")


def said(kind: str) -> str:
    return SAID.get(kind, kind + " {}").format(PII[kind])


# (a sentence: the guard network reads a "Name: field; field" note as an injection, a known
# limitation noted in models/README.md; this test is about where PII ends up)
ALL = f"{MARKER}'s record lists " + ", ".join(said(k) for k in PII if k != "secret") + "."


@dataclass
class Deployed:
    server: CliServer
    key: str
    data: Path
    content: bool
    port: int


@pytest.fixture(scope="module", params=[False, True], ids=["content-off", "content-on"])
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Deployed]:
    data = tmp_path_factory.mktemp("pii-at-rest")
    key = create_key(data, "frontdesk")
    port = free_port()
    server = start_cli([*APPLIANCE, "serve", "--host", "0.0.0.0", "--port", str(port),
                        "--data-dir", str(data), "--parallel", "2", "--ctx-size", "1024",
                        "--threads", "2", "--guard-policy", "clinic",
                        "--log-content", str(request.param).lower(),
                        "--cache-sweep-interval-s", "0.5"],
                       f"http://127.0.0.1:{port}", data / "serve.log")
    try:
        yield Deployed(server, key, data, request.param, port)
    finally:
        if server.proc.poll() is None:
            server.stop()


@dataclass
class Sweep:
    """What was planted where, and the request ids the server answered with."""

    planted: set[tuple[str, str]] = field(default_factory=set)
    request_ids: list[str] = field(default_factory=list)

    def plant(self, where: str, *kinds: str) -> None:
        self.planted.update((where, k) for k in (kinds or tuple(PII)))


# --- planting --------------------------------------------------------------------------------

def _chats(d: Deployed, sweep: Sweep) -> None:
    """Every kind as message content (the secret: refused), as ``user``, as the session
    (header or body) and as the request id, with the URL query carrying it too."""
    client = openai.OpenAI(base_url=d.server.url + "/v1", api_key=d.key, max_retries=0)
    for kind, value in PII.items():
        content = f"{MARKER} asks: what is {said(kind)} about? One word."
        ids = {"user": value, "extra_query": {"note": value}, "max_tokens": 2,
               "temperature": 0, "model": "default"}
        if kind == "secret":
            with pytest.raises(openai.BadRequestError) as refused:
                client.chat.completions.create(
                    messages=[{"role": "user", "content": content}], **ids)
            assert refused.value.code == "content_filter"
            content = f"{MARKER} asks: what is a session? One word."
        raw = client.chat.completions.with_raw_response.create(
            messages=[{"role": "user", "content": content}],
            extra_headers={"X-Session-Id": value, "X-Request-Id": AS_ID[kind]}, **ids)
        assert raw.headers["x-request-id"] != AS_ID[kind]  # PII: replaced by ours
        sweep.request_ids.append(raw.headers["x-request-id"])
        assert raw.parse().choices[0].message.content is not None
        stream = client.chat.completions.create(
            messages=[{"role": "user", "content": content}], stream=True,
            extra_body={"session_id": value}, **ids)
        assert [c for c in stream]
    completion = client.completions.create(model="default", prompt=ALL, max_tokens=2,
                                           temperature=0, user=PII["email"])
    assert completion.choices
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="default", prompt=said("secret"), max_tokens=2)
    sweep.plant("message content")
    sweep.plant("completion prompt")
    for where in ("chat user", "X-Session-Id", "chat session_id", "X-Request-Id",
                  "URL query"):
        sweep.plant(where)
    client.embeddings.create(model="default", input=[ALL, said("secret")])
    sweep.plant("embeddings input")


async def _memory(d: Deployed, sweep: Sweep) -> None:
    """Every kind as memory content (redacted and stored, or refused), as the memory's
    user and session, in list, pin, delete and forget requests."""
    auth = {"Authorization": f"Bearer {d.key}"}
    async with aiohttp.ClientSession(d.server.url, headers=auth) as http:
        async def call(method: str, path: str, body: Any = None, **query: str
                       ) -> tuple[int, Any]:
            async with http.request(method, path, json=body, params=query) as r:
                return r.status, await r.json()

        for kind, value in PII.items():
            status, entry = await call("POST", "/v1/memory", {
                "scope": "user", "user": value, "content": f"{MARKER}: {said(kind)}."})
            if kind == "secret":
                assert status == 400 and entry["error"]["code"] == "content_filter"
                assert entry["error"]["guard"] == "rules"
                assert entry["error"]["param"] == "content"
                status, entry = await call("POST", "/v1/memory", {
                    "scope": "user", "user": value, "content": f"{MARKER}: a note."})
            else:
                assert entry["redacted"] is True and value not in entry["content"]
            assert status == 200 and entry["user"] == value  # the plain id, echoed
            status, turn = await call("POST", "/v1/memory", {
                "scope": "session", "user": value, "session_id": value,
                "content": f"{MARKER}: a turn."})
            assert status == 200 and (turn["user"], turn["session_id"]) == (value, value)
            status, listed = await call("GET", "/v1/memory", scope="user", user=value)
            assert status == 200 and [e["id"] for e in listed["data"]] == [entry["id"]]
            assert listed["data"][0]["user"] == value
            status, pinned = await call("PATCH", f"/v1/memory/{entry['id']}",
                                        {"pinned": True, "user": value})
            assert status == 200 and pinned["pinned"] and pinned["user"] == value
            status, _ = await call("DELETE", f"/v1/memory/{turn['id']}", user=value)
            assert status == 200
        status, everything = await call("POST", "/v1/memory", {
            "scope": "session", "session_id": "all-kinds", "content": ALL})
        assert status == 200 and everything["redacted"] is True
        assert everything["content"].count("[") == len(PII) - 1
        status, gone = await call("DELETE", "/v1/memory", user=PII["email"])
        assert status == 200 and gone["deleted"] >= 1 and gone["user"] == PII["email"]
        _, left = await call("GET", "/v1/memory", scope="user", user=PII["email"])
        assert left["data"] == []
        status, _ = await call("POST", "/v1/guard", {"input": [ALL, said("secret")]})
        assert status == 200
    for where in ("memory content", "memory user", "memory session_id", "guard input"):
        sweep.plant(where)


def _elsewhere(d: Deployed, sweep: Sweep) -> None:
    """A wrong key, a path and a cache-scope header carrying each kind."""
    for value in PII.values():
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=d.server.url + "/v1", api_key=value,
                          max_retries=0).models.list()
        client = openai.OpenAI(base_url=d.server.url + "/v1", api_key=d.key, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            client.get("/" + urllib.parse.quote(value), cast_to=object)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}],
                extra_headers={"X-Cache-Scope": value})
    for where in ("Authorization", "URL path", "X-Cache-Scope"):
        sweep.plant(where)


async def _malformed(d: Deployed, sweep: Sweep) -> None:
    """Requests the HTTP parser rejects, each carrying PII in what it rejects."""
    values, close = list(PII.values()), "Connection: close\r\n"
    auth = f"Authorization: Bearer {d.key}\r\n"
    raws = [f"GET /v1/models?{v} HTTP/1.1\r\nHost: x\r\nBad Header {v}: 1\r\n\r\n"
            for v in values]
    raws += [f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {v}\r\n"
             f"{close}\r\n" for v in values]
    raws += [f"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Pad: {v * 800}\r\n{close}\r\n"
             for v in values]
    raws += [f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}{close}"
             f"Transfer-Encoding: chunked\r\n\r\n{v}\r\n\r\n" for v in values]
    raws += [f"GET /health HTTP/1.1\r\nHost: x\r\n\r\nG{v} / HTTP/1.1\r\n\r\n"
             for v in values]
    for raw in raws:
        reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
        writer.write(raw.encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
        assert answer.startswith(b"HTTP/1.")
        writer.close()
    sweep.plant("malformed request")


# --- searching -------------------------------------------------------------------------------

def _at_rest(data: Path) -> dict[str, bytes]:
    """Every SQLite and vector index file of the data directory, as raw bytes."""
    files = [*data.glob("appliance.db*"), *(data / "vectors").rglob("*")]
    return {str(p.relative_to(data)): p.read_bytes() for p in files if p.is_file()}


def _found(places: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(needle, where) for where, raw in places.items() for needle in NEEDLES
            if needle.encode() in raw]


def _stored_ids(data: Path) -> tuple[set[str], set[str], list[str]]:
    with sqlite3.connect(data / "appliance.db") as conn:
        users = {r[0] for r in conn.execute("SELECT user FROM memories UNION "
                                            "SELECT session_id FROM memories")}
        scopes = {r[0] for r in conn.execute("SELECT scope FROM cache_entries")}
        audited = [r[0] for r in conn.execute(
            "SELECT json_extract(detail, '$.user') FROM audit_log "
            "WHERE event IN ('memory.delete', 'memory.forget_user')")]
    return users, scopes, audited


@pytest.mark.timeout(900)  # about 60 generations, and the two servers' starts
def test_no_planted_value_is_at_rest_or_in_the_log(deployed: Deployed) -> None:
    d, sweep = deployed, Sweep()
    assert all(Scrubber.for_policies(["clinic"]).text(said(k)) != said(k) for k in PII)
    _chats(d, sweep)
    asyncio.run(_memory(d, sweep))
    _elsewhere(d, sweep)
    asyncio.run(_malformed(d, sweep))
    time.sleep(2.0)  # the sweeper saves the vector indexes every 0.5 s
    running = _at_rest(d.data)
    assert {"appliance.db", "appliance.db-wal", "appliance.db-shm"} <= set(running)
    assert any(p.startswith("vectors/memories/") for p in running)
    assert any(p.startswith("vectors/cache_entries/") for p in running)
    assert d.server.stop() == 0
    stopped = _at_rest(d.data)
    log = d.server.log.read_bytes()
    places = {"log": log, **{f"{p} (running)": b for p, b in running.items()},
              **{f"{p} (stopped)": b for p, b in stopped.items()}}
    found = _found(places)
    print(f"\nPII sweep, content logging {'on' if d.content else 'off'}: "
          f"{len(sweep.planted)} plantings ({len(PII)} kinds x "
          f"{len({w for w, _ in sweep.planted})} fields), {len(NEEDLES)} raw values "
          f"searched in {len(places)} places ({sum(map(len, places.values()))} bytes): "
          f"{len(found)} found")
    assert found == []
    # the controls: the search reads what was written
    for files in (running, stopped):
        assert MARKER.encode() in b"".join(b for p, b in files.items()
                                           if p.startswith("appliance.db"))
    assert (MARKER.encode() in log) is d.content
    lines = log.decode().splitlines()
    assert all(rid in log.decode() for rid in sweep.request_ids)
    assert sum('"appliance.access"' in line for line in lines) > 100
    assert any("refused a malformed request" in line for line in lines)  # by kind only
    users, scopes, audited = _stored_ids(d.data)
    assert users - {""} and all(HEX64.fullmatch(u) for u in users - {""})
    assert all(s == "global" or re.fullmatch(r"key:\d+/user:([0-9a-f]{64})?", s)
               for s in scopes) and any(HEX64.search(s) for s in scopes)
    assert audited and all(HEX64.fullmatch(a) for a in audited)
