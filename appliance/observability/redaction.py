"""What the server writes about a request carries no PII: the one redactor of logs and
request ids.

- :meth:`Scrubber.text`: a text as content logging (``log_content``) writes it: normalised
  (so fullwidth digits or zero-width separators cannot carry PII past it), every PII and
  secret span replaced by its label (``[EMAIL]``, ``[CARD]``, ``[RECORD]``...).
- :meth:`Scrubber.request_id`: the client's ``X-Request-Id`` when it is short and plain (at
  most 64 characters of ``[A-Za-z0-9._-]`` in which no detector finds anything: a card
  number or an MRN is plain characters too), else a new id of our own. The id is logged,
  audited and sent back, so nothing else may pass.

Record numbers are policy-defined regexes: the scrubber knows those of the server's policy
and of every preset, whichever policy a request's key names.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence

from appliance.guards.fold import normalize_text
from appliance.guards.pii import find_pii, redact

MAX_REQUEST_ID = 64
_PLAIN_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_REQUEST_ID}}}")


class Scrubber:
    def __init__(self, records: Sequence[re.Pattern[str]] = ()) -> None:
        self._records = tuple(dict.fromkeys(records))

    @classmethod
    def for_policies(cls, policies: Iterable[str]) -> Scrubber:
        """A scrubber that knows the record patterns of ``policies`` (names or paths)."""
        from appliance.guards.policy import load_policy

        records = [r for name in policies for r in load_policy(name).rule_set.records]
        return cls(records)

    def text(self, text: str) -> str:
        clean = normalize_text(text)
        return redact(clean, find_pii(clean, records=self._records))

    def request_id(self, offered: str | None) -> str:
        if (offered and _PLAIN_ID.fullmatch(offered)
                and not find_pii(offered, records=self._records)):
            return offered
        return uuid.uuid4().hex
