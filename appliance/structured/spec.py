"""What a request asks of the shape of its answer: a response format, tools, a tool choice.

Plain frozen data, built by :mod:`appliance.api.structured` from the request's JSON.
Schemas are kept as JSON text (hashed into cache keys; grammars are cached by them) next to
their decoded form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ResponseFormat:
    kind: Literal["json_object", "json_schema"]
    name: str
    schema_json: str  # "" for json_object


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    parameters: dict[str, Any] | None  # a JSON schema (None: no parameters)
    parameters_json: str
    strict: bool = False

    def definition(self) -> dict[str, Any]:
        """As OpenAI's ``tools`` entries spell it (what chat templates expect)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = (self.parameters if self.parameters is not None
                                  else {"type": "object", "properties": {}})
        return {"type": "function", "function": function}


ChoiceMode = Literal["none", "auto", "required", "function"]


@dataclass(frozen=True)
class Tools:
    functions: tuple[Function, ...]
    choice: ChoiceMode
    forced: str | None = None  # the function a named tool_choice forces
    parallel: bool = True

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.functions)

    @property
    def key(self) -> str:
        """Everything about the tools that changes an answer, as text (for cache keys)."""
        return json.dumps([[[f.name, f.description, f.parameters_json, f.strict]
                            for f in self.functions], self.choice, self.forced,
                           self.parallel], ensure_ascii=False)
