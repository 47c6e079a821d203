"""The OpenAI embeddings request, parsed and validated at the edge.

``input`` is a string, an array of strings, an array of token ids or an array of such
arrays (as OpenAI takes them; the ids are of the encoder's own vocabulary, see
``Encoder.frame``); ``encoding_format`` is ``float`` (default) or ``base64`` (little-endian
float32, what the official client asks for); ``dimensions``, when given, must be the
encoder's own.
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
    token_ids: tuple[tuple[int, ...], ...] = ()  # the inputs given as token ids instead


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(as_int(t) is not None for t in value)


def _inputs(value: Any) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """The texts, or the token-id arrays (one kind per request)."""
    if isinstance(value, str) or (_is_ids(value) and value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a non-empty string, array of strings, array "
                             "of token ids or array of token-id arrays", param="input")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"'input' takes at most {MAX_INPUTS} inputs per request",
                             param="input")
    if not isinstance(value[0], str | list):
        raise InvalidRequest("'input' as token ids must hold integers only", param="input")
    texts = isinstance(value[0], str)
    kind = "a string" if texts else "an array of token ids"
    for i, item in enumerate(value):
        if isinstance(item, str) != texts or not (texts or _is_ids(item)):
            raise InvalidRequest(f"input[{i}] must be {kind}, like input[0] (strings and "
                                 f"token ids do not mix in one request)", param="input")
        if not item:
            raise InvalidRequest(f"input[{i}] is empty", param="input")
        if not texts and min(item) < 0:
            raise InvalidRequest(f"input[{i}] holds a negative token id", param="input")
    return (tuple(value), ()) if texts else ((), tuple(tuple(int(t) for t in ids)
                                                    for ids in value))


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
    fmt = body.get("encoding_format")
    fmt = "float" if fmt is None else fmt
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
    texts, token_ids = _inputs(body["input"])
    return EmbeddingRequest(model=model, inputs=texts, token_ids=token_ids,
                            encoding_format="base64" if fmt == "base64" else "float",
                            dimensions=dims, user=user)
