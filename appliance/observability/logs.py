"""Structured logs: one JSON object per line (orjson), set up in one place.

``setup_logging(level)`` puts a ``JsonFormatter`` on a stderr handler of the root logger.
Every record becomes ``{"ts", "level", "logger", "msg", ...}``, plus the fields a caller
passes as ``extra={"fields": {...}}`` (the access log does; see ``access_fields``) and the
traceback as ``"exc"`` when there is one, with any PII in it masked (an exception's message
can quote a request's values).

The access log (logger ``appliance.access``, one line per HTTP request) is built from the
request's ``RequestTrace``: request id, key name (never the secret), route, status,
latencies, token counts, cache result, guard actions, and the engine and model that
answered (with failovers and the ``auto`` rule's reason). Prompt and response text are not
in it unless content logging is on (setting ``log_content``); then both pass through the
PII redaction of :mod:`appliance.observability.redaction` first (``redact_for_log`` here is
its form without policy record patterns), on the normalised text so that fullwidth digits
or zero-width separators cannot carry PII past it. Request ids are screened by the same
module.
"""

from __future__ import annotations

import datetime
import logging
import sys
from collections.abc import Mapping
from typing import IO, Any

import orjson

from appliance.guards.pii import find_pii, redact
from appliance.observability.redaction import Scrubber
from appliance.observability.trace import RequestTrace

ACCESS_LOGGER = "appliance.access"
_FIELDS = "fields"
_SCRUB = Scrubber()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, Mapping):
            out.update(fields)
        if record.exc_info:
            text = self.formatException(record.exc_info)
            out["exc"] = redact(text, find_pii(text))  # layout kept: not normalised
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str, stream: IO[str] | None = None) -> logging.Handler:
    """JSON lines on ``stream`` (stderr) for every logger, at ``level``; returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler


def redact_for_log(text: str) -> str:
    """``text`` normalised, with every PII and secret span replaced by its label."""
    return _SCRUB.text(text)


def access_fields(trace: RequestTrace, method: str, route: str, *,
                  content: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The access-log fields of one request. ``route`` is the matched route's path, not
    the raw one (a raw path can carry anything, PII included); ``content``: already
    redacted texts."""
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1e3, 3)

    fields: dict[str, Any] = {
        "request_id": trace.request_id, "key": trace.key_name, "method": method,
        "route": route, "status": trace.status, "error_type": trace.error_type,
        "ms": ms(trace.finished_s), "queue_ms": ms(trace.queue_wait_s),
        "ttft_ms": ms(trace.first_token_s), "prefill_ms": ms(trace.prefill_s),
        "guard_ms": ms(trace.guard_s) if trace.guard_s else None,
        "prompt_tokens": trace.prompt_tokens, "completion_tokens": trace.completion_tokens,
        "cached_tokens": trace.cached_tokens, "memory_tokens": trace.memory_tokens,
        "cache": trace.cache, "engine": trace.engine, "model": trace.model,
        "failovers": trace.failovers, "auto": trace.auto_reason,
        "guard_actions": [{"guard": a.guard, "direction": a.direction, "label": a.label,
                           "action": a.action, "ms": a.ms} for a in trace.guard_actions],
    }
    if content:
        fields.update(content)
    return fields
