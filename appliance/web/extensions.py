"""What the appliance adds to OpenAI response bodies, in a field OpenAI clients ignore.

``x_appliance`` is a top-level object of the first stream chunk (or of a non-streamed
response), present only when there is something to say:

- ``input_redacted``: the last user message as the model saw it, when the input rail
  redacted personal data in it (``"my mail is [EMAIL]"``), so a client can show the user
  what was sent; it holds no more than the redacted text, which is never logged;
- ``topic``: the name of the topic rail that answered instead of the model
  (``"emergency"``).
"""

from __future__ import annotations

from typing import Any

from appliance.observability.trace import RequestTrace
from appliance.pipeline.job import Job

FIELD = "x_appliance"


def appliance_extra(job: Job, trace: RequestTrace) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    rules = job.rules
    if rules is not None and rules.texts[rules.main] != rules.originals[rules.main]:
        out["input_redacted"] = rules.texts[rules.main]
    if trace.topic is not None:
        out["topic"] = trace.topic
    return out or None
