"""A guard policy as JSON, for ``GET /v1/admin/policy``: what each tier does, never the
compiled objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.guards.policy import Budget, ClassifierPolicy, Policy


def _plain(value: object) -> Any:
    """The policy's read-only config tables as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _budget(b: Budget) -> dict[str, Any]:
    return {"budget_ms": b.budget_ms, "on_timeout": b.on_timeout, "on_error": b.on_error}


def _classifier(c: ClassifierPolicy) -> dict[str, Any]:
    return {"enabled": c.enabled, "threshold": c.threshold, "action": c.action,
            "categories": dict(c.categories), **_budget(c.budget)}


def policy_body(p: Policy, *, server_default: bool) -> dict[str, Any]:
    return {
        "object": "guard_policy", "name": p.name, "version": p.version,
        "description": p.description, "refusal": p.refusal,
        "server_default": server_default,
        "rules": _plain(p.rules_config),
        "network": _budget(p.network),
        "classifiers": {"prompt-injection": _classifier(p.injection),
                        "content-safety": _classifier(p.safety),
                        "directive": _classifier(p.directive)},
        "topics": [{"name": t.name, "threshold": t.threshold, "answer": t.answer,
                    "examples": len(t.examples)} for t in p.topics],
        "output": {"blocked_message": p.output.blocked_message,
                   "classify": p.output.classify,
                   "rules": [{"name": r.name, "replacement": r.replacement}
                             for r in p.output.rules]},
    }
