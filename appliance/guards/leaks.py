"""The PII detector of kind ``secret``: credentials leaked into a text.

Finds ``sk-...`` (20+ characters: ``sk-appl-``, ``sk-proj-``...) API keys, AWS
``AKIA``/``ASIA`` key ids, GitHub ``ghp_``/``gho_``/... and ``github_pat_`` tokens, Slack
``xox?-`` tokens, JWTs, PEM private keys (header to footer, or the header alone), and the value
of ``api_key=``, ``token:``, ``DB_PASSWORD=`` ... assignments (8+ characters, 4+ for
passwords) and ``Bearer`` headers; not placeholders and references such as ``${API_KEY}``,
``<your-key>``, ``***``, ``os.environ[...]`` or ``required``.

The token patterns run on every text (each starts with a literal, so re finds it fast); the
assignments only when a cue word (key, secret, token, pass, pwd, bearer) is in the text.
"""

from __future__ import annotations

import re

from appliance.guards._scan import Candidates, ScanText

_TOKENS = tuple(re.compile(p) for p in (
    r"sk-(?<![\w-]sk-)[A-Za-z0-9_-]{20,}",  # OpenAI-style keys, sk-appl-, sk-proj-, sk-ant-
    r"A(?<!\wA)(?:KIA|SIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"gh(?<!\wgh)[pousr]_[A-Za-z0-9]{36,255}\b",  # GitHub tokens
    r"github_pat_(?<!\wgithub_pat_)[A-Za-z0-9_]{22,255}\b",
    r"xox(?<!\wxox)[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"eyJ(?<!\weyJ)[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    r"(?:[\s\S]{0,16384}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----)?",
))
_SECRET_WORDS = ("key", "secret", "token", "pass", "pwd", "bearer")
_ASSIGNMENT = re.compile(  # on the lower-cased text
    r"(?<![a-z0-9])(?P<name>api[_-]?key|apikey|secret[_-]?key|client[_-]?secret|access[_-]?"
    r"token|auth[_-]?token|private[_-]?key|password|passwd|passphrase|pwd|secret|token)"
    r"[\"']?\s*[:=]\s*[\"']?(?P<value>[^\s\"'`,;]{4,})"
    r"|\bbearer\s+(?P<bearer>[a-z0-9._~+/-]{16,}=*)")
_PLACEHOLDER = re.compile(  # full match: values that are references or masks, not secrets
    r"[*x.#_-]+|[<{$%].*|.*[()\[\]].*|your.*|none|null|nil|true|false|required|optional|"
    r"string|redacted|hidden|example|placeholder")
_PASSWORD_NAMES = frozenset({"password", "passwd", "passphrase", "pwd"})


def secret_spans(t: ScanText) -> Candidates:
    for pattern in _TOKENS:
        for m in pattern.finditer(t.text):
            yield m.span()
    if not any(w in t.low for w in _SECRET_WORDS):
        return
    for m in _ASSIGNMENT.finditer(t.low):  # spans of the lower-cased text are the text's
        if m.group("bearer"):
            yield m.span("bearer")
            continue
        value = m.group("value")
        shortest = 4 if m.group("name") in _PASSWORD_NAMES else 8
        if len(value) >= shortest and not _PLACEHOLDER.fullmatch(value):
            yield m.span("value")
