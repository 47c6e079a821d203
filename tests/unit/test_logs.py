"""JSON log lines and the redaction used for content logging."""

from __future__ import annotations

import io
import logging

import orjson

from appliance.observability.logs import JsonFormatter, access_fields, redact_for_log, setup_logging
from appliance.observability.trace import GuardAction, RequestTrace


def test_every_record_is_one_json_line_with_fields_and_traceback() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("appliance.test-logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("two\nlines %d", 2, extra={"fields": {"request_id": "abc", "n": 3}})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (orjson.loads(x) for x in lines)
    assert first["msg"] == "two\nlines 2" and first["level"] == "warning"
    assert first["request_id"] == "abc" and first["n"] == 3
    assert first["logger"] == "appliance.test-logs" and first["ts"].endswith("+00:00")
    assert "ValueError: boom" in second["exc"]


def test_pii_in_an_exception_message_is_masked_and_the_traceback_kept() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("appliance.test-logs-exc")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise KeyError("jane.roe@example.org")
        except KeyError:
            log.exception("lookup failed")
    finally:
        log.removeHandler(handler)
    exc = orjson.loads(out.getvalue())["exc"]
    assert "jane.roe" not in exc and "KeyError: '[EMAIL]'" in exc
    assert exc.startswith("Traceback (most recent call last):\n  File ")


def test_setup_logging_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        out = io.StringIO()
        setup_logging("warning", out)
        assert root.level == logging.WARNING and len(root.handlers) == 1
        logging.getLogger("appliance.x").warning("hello")
        assert orjson.loads(out.getvalue())["msg"] == "hello"
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)


def test_redaction_sees_through_fullwidth_digits_and_zero_width_spaces() -> None:
    text = "card ４１１１ １１１１ １１１１ １１１１, mail jane\u200b.doe@example.org"
    clean = redact_for_log(text)
    assert "[CARD]" in clean and "[EMAIL]" in clean
    assert "1111" not in clean and "example.org" not in clean


def test_access_fields_carry_no_content_unless_given() -> None:
    t = RequestTrace("rid", "/v1/x/jane@example.org")
    t.status, t.finished_s, t.key_name = 200, 0.5, "frontdesk"
    t.guard_actions.append(GuardAction("pii", "input", "email", "redact", 0.1))
    fields = access_fields(t, "POST", "/v1/chat/completions")
    assert fields["route"] == "/v1/chat/completions" and fields["ms"] == 500.0
    assert fields["guard_actions"] == [{"guard": "pii", "direction": "input",
                                        "label": "email", "action": "redact", "ms": 0.1}]
    assert "request_body" not in fields and "jane" not in orjson.dumps(fields).decode()
