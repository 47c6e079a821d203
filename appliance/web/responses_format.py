"""Responses API bodies: the ``response`` object and its stream of typed events.

One turn is one output message with one ``output_text`` part. A stream goes
``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``..., then
``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``
and ``response.completed`` (or ``response.incomplete`` when ``max_output_tokens`` or the
output rail cut it), every event numbered by ``sequence_number``.
"""

from __future__ import annotations

from typing import Any

from appliance.api.responses import ResponsesRequest
from appliance.pipeline.job import Chunk, FinishReason, Job, Usage

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _usage(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                     "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


class ResponseShape:
    """The ids and the request's echo of one response."""

    def __init__(self, job: Job, req: ResponsesRequest, model: str) -> None:
        suffix = job.id.split("-", 1)[-1]
        self.id = f"resp_{suffix}"
        self.message_id = f"msg_{suffix}"
        self._job = job
        self._req = req
        self._model = model

    def part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def message(self, text: str | None, status: str) -> dict[str, Any]:
        """The output message (``text`` None: not started, no content yet)."""
        return {"type": "message", "id": self.message_id, "status": status,
                "role": "assistant", "content": [] if text is None else [self.part(text)]}

    def body(self, *, text: str | None, finish: FinishReason | None,
             usage: Usage | None) -> dict[str, Any]:
        """The response object: in progress (``finish`` None) or finished."""
        options = self._job.options
        status = ("in_progress" if finish is None else
                  "incomplete" if finish in _INCOMPLETE else "completed")
        output = [] if finish is None else [self.message(text or "", status)]
        return {
            "id": self.id, "object": "response", "created_at": self._job.created,
            "status": status, "error": None,
            "incomplete_details": ({"reason": _INCOMPLETE[finish]} if finish in _INCOMPLETE
                                   else None),
            "instructions": self._req.instructions, "model": self._model, "output": output,
            "max_output_tokens": self._req.max_output_tokens,
            "temperature": options.sampling.temperature, "top_p": options.sampling.top_p,
            "parallel_tool_calls": False, "tool_choice": "none", "tools": [],
            "text": {"format": {"type": "text"}}, "truncation": "disabled", "store": False,
            "background": False, "previous_response_id": None, "reasoning": None,
            "metadata": self._req.metadata, "user": options.user,
            "usage": None if usage is None else _usage(usage),
        }


class ResponseEvents:
    """The event stream of one response, from the pipeline's chunks."""

    def __init__(self, shape: ResponseShape) -> None:
        self._shape = shape
        self._sequence = 0
        self._text: list[str] = []

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _at(self) -> dict[str, Any]:
        return {"item_id": self._shape.message_id, "output_index": 0, "content_index": 0}

    def opening(self) -> list[dict[str, Any]]:
        shape = self._shape
        started = shape.body(text=None, finish=None, usage=None)
        return [self._event("response.created", response=started),
                self._event("response.in_progress", response=started),
                self._event("response.output_item.added", output_index=0,
                            item=shape.message(None, "in_progress")),
                self._event("response.content_part.added", **self._at(),
                            part=shape.part(""))]

    def chunk(self, c: Chunk) -> list[dict[str, Any]]:
        out = []
        if c.text:
            self._text.append(c.text)
            out.append(self._event("response.output_text.delta", **self._at(), delta=c.text,
                                   logprobs=[]))
        if c.finish_reason is None:
            return out
        shape, text = self._shape, "".join(self._text)
        done = shape.body(text=text, finish=c.finish_reason, usage=c.usage)
        return [*out,
                self._event("response.output_text.done", **self._at(), text=text,
                            logprobs=[]),
                self._event("response.content_part.done", **self._at(),
                            part=shape.part(text)),
                self._event("response.output_item.done", output_index=0,
                            item=done["output"][0]),
                self._event(f"response.{done['status']}", response=done)]
