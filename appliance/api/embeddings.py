"""The OpenAI embeddings request, parsed and validated at the edge.

``input`` is a string or an array of strings (arrays of token ids are refused: the
appliance's encoder has its own tokenizer); ``encoding_format`` is ``float`` (default) or
``base64`` (little-endian float32, what the official client asks for); ``dimensions``, when
given, must be the encoder's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from appliance.api.requests import as_int
from appliance.errors import InvalidRequest

MAX_INPUTS = 2048

EncodingFormat = Literal["float", "base64"]


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[str, ...]
    encoding_format: EncodingFormat
    dimensions: int | None
    user: str | None


def _inputs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a non-empty string or a non-empty array of "
                             "strings", param="input")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"'input' takes at most {MAX_INPUTS} strings per request",
                             param="input")
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise InvalidRequest("'input' must hold strings (token-id arrays are not "
                                 f"supported); input[{i}] is not a string", param="input")
        if not text:
            raise InvalidRequest(f"input[{i}] is an empty string", param="input")
    return tuple(value)


def parse_embeddings(body: Any) -> EmbeddingRequest:
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("you must provide a 'model'", param="model",
                             code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    if "input" not in body:
        raise InvalidRequest("'input' is required", param="input",
                             code="missing_required_parameter")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'",
                             param="encoding_format")
    raw_dims = body.get("dimensions")
    dims = as_int(raw_dims)
    if raw_dims is not None and dims is None:
        raise InvalidRequest("'dimensions' must be an integer", param="dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string", param="user")
    return EmbeddingRequest(model=model, inputs=_inputs(body["input"]),
                            encoding_format="base64" if fmt == "base64" else "float",
                            dimensions=dims, user=user)
