"""Whether the guards can run: ``off``, ``loading``, ``ready`` or ``failed``.

The guard models load on a worker thread while the server already listens, so requests and
``/ready`` ask this object rather than the guards themselves. It is the one place their
state changes: the start-up task calls :meth:`loaded` or :meth:`failed` once.
"""

from __future__ import annotations

from typing import Literal

from appliance.errors import NotReady, Unavailable
from appliance.guards.rails import Guards

GuardsStatus = Literal["off", "loading", "ready", "failed"]


class GuardsState:
    def __init__(self, *, enabled: bool) -> None:
        self._status: GuardsStatus = "loading" if enabled else "off"
        self._guards: Guards | None = None
        self._error: str | None = None

    @property
    def status(self) -> GuardsStatus:
        return self._status

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def enabled(self) -> bool:
        return self._status != "off"

    def loaded(self, guards: Guards) -> None:
        self._guards, self._status = guards, "ready"

    def failed(self, error: str) -> None:
        self._error, self._status = error, "failed"

    def get(self) -> Guards:
        """The loaded guards; 503 while they load or after they failed (fail closed)."""
        if self._guards is not None:
            return self._guards
        if self._status == "failed":
            raise Unavailable(f"the guards failed to load: {self._error}")
        if self._status == "off":
            raise Unavailable("the guards are switched off on this server (guards = false)")
        raise NotReady("the guards are still loading; retry shortly", retry_after=2)

    def close(self) -> None:
        if self._guards is not None:
            self._guards.close()
