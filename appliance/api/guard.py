"""``POST /v1/guard``: the request, parsed and validated at the edge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidRequest

MAX_INPUTS = 64


@dataclass(frozen=True)
class GuardRequest:
    inputs: tuple[str, ...]
    batch: bool  # the input was a list: answer with a list
    role: str  # "user" or "system" (the input rail), or "assistant" (the output rail)
    policy: str | None  # a preset name; None: the key's (or the server's) policy


def parse_guard(body: Any, presets: tuple[str, ...]) -> GuardRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = set(body) - {"input", "role", "policy"}
    if unknown:
        raise InvalidRequest(f"unknown field(s) {sorted(unknown)}; fields are input, role, "
                             "policy", param=sorted(unknown)[0])
    raw = body.get("input")
    batch = isinstance(raw, list)
    items = raw if isinstance(raw, list) else [raw]
    if raw is None or not items or not all(isinstance(x, str) for x in items):
        raise InvalidRequest("'input' must be a string or a non-empty array of strings",
                             param="input")
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(f"'input' holds at most {MAX_INPUTS} texts", param="input")
    role = body.get("role", "user")
    if role not in ("user", "system", "assistant"):
        raise InvalidRequest("'role' must be \"user\" or \"system\" (input rail) or "
                             "\"assistant\" (output rail)", param="role")
    policy = body.get("policy")
    if policy is not None and (not isinstance(policy, str) or policy not in presets):
        raise InvalidRequest(f"'policy' must be one of the presets {list(presets)}",
                             param="policy")
    return GuardRequest(tuple(str(x) for x in items), batch, role, policy)
