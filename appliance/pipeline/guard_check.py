"""``POST /v1/guard`` and ``appliance guard check``: texts through a rail, nothing generated."""

from __future__ import annotations

from collections.abc import Sequence

from appliance.admission.keys import KeyRecord
from appliance.errors import InvalidRequest
from appliance.guards.rails import TextReport
from appliance.guards.readiness import GuardsState


class GuardCheck:
    def __init__(self, guards: GuardsState) -> None:
        self._guards = guards

    async def check(self, texts: Sequence[str], role: str, key: KeyRecord,
                    policy: str | None = None) -> list[TextReport]:
        """Each text through the input (role user) or output (role assistant) rail of
        ``policy``, else the key's policy, else the server's."""
        if not self._guards.enabled:
            raise InvalidRequest("the guards are switched off on this server (guards = false)",
                                 code="guards_disabled")
        guards = self._guards.get()
        rails = guards.rails(policy or key.guard_policy)
        return [await guards.check_text(text, role, rails) for text in texts]
