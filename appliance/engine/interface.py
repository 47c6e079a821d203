"""The engine interface: what the pipeline's generation stage calls, whoever generates.

Two kinds implement it: the embedded llama.cpp engine (:class:`~appliance.engine.engine.
Engine`) and an upstream server speaking the OpenAI API (:class:`~appliance.upstream.
client.UpstreamEngine`). ``submit`` starts one generation and returns its events
(:class:`~appliance.engine.types.TextDelta` as text is released, then one
:class:`~appliance.engine.types.Finished`); ``cancel()``, or leaving the iteration early,
ends it and frees the engine's slot (a sequence dropped within one decode step; an
upstream's HTTP stream closed).

``remote`` says where the prompt goes: a local engine may start prefilling before the input
classifiers have passed (a block cancels it and nothing left the box); a remote one is
called only after the whole input rail passed. A remote engine reports failure by raising
from the iteration, in the error tree (:class:`~appliance.errors.BadGateway`,
:class:`~appliance.errors.GatewayTimeout`, :class:`~appliance.errors.Overloaded`, ...);
the embedded one by a ``Finished`` with reason ``error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from appliance.engine.types import Event, GenerationRequest


class EventStream(Protocol):
    def cancel(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[Event]: ...


class GenerationEngine(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def remote(self) -> bool: ...

    def submit(self, request: GenerationRequest) -> EventStream: ...
