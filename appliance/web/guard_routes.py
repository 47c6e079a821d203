"""``POST /v1/guard``: run the guard rails on texts without generating anything."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.admission.keys import Scope
from appliance.api.guard import parse_guard
from appliance.guards.pipeline import GuardVerdict
from appliance.guards.policy import presets
from appliance.guards.rails import TextReport
from appliance.web.routes import json_response, read_json
from appliance.web.state import GATE, GUARD_CHECK, KEY, TRACE

routes = web.RouteTableDef()


def _verdict(v: GuardVerdict) -> dict[str, Any]:
    return {"guard": v.guard, "tier": v.tier, "label": v.label, "category": v.category,
            "score": round(v.score, 4), "action": v.action, "ms": round(v.ms, 3)}


def report_body(report: TextReport) -> dict[str, Any]:
    return {"allowed": report.allowed, "action": report.action, "redacted": report.redacted,
            "message": report.message,
            "topic": report.topic.topic if report.topic is not None else None,
            "verdicts": [_verdict(v) for v in report.verdicts], "ms": round(report.ms, 3)}


@routes.post("/v1/guard")
async def guard(request: web.Request) -> web.Response:
    key, gate = request[KEY], request.app[GATE]
    gate.require(key, Scope.CHAT)
    gate.check_capacity()
    req = parse_guard(await read_json(request), presets())
    reports = await request.app[GUARD_CHECK].check(req.inputs, req.role, key,
                                                   request[TRACE], req.policy)
    if req.batch:
        body: dict[str, Any] = {"allowed": all(r.allowed for r in reports),
                                "results": [report_body(r) for r in reports],
                                "ms": round(sum(r.ms for r in reports), 3)}
    else:
        body = report_body(reports[0])
    return json_response(body)
