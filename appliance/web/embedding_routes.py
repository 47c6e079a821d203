"""``POST /v1/embeddings``: parse, call the embedding service, map the result."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web

from appliance.admission.keys import Scope
from appliance.api import schema
from appliance.api.embeddings import parse_embeddings
from appliance.pipeline.embeddings import Embeddings
from appliance.web.openapi import Operation
from appliance.web.routes import read_json
from appliance.web.state import EMBEDDINGS, GATE, KEY, TRACE

routes = web.RouteTableDef()


def embeddings_body(result: Embeddings, encoding_format: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for i, row in enumerate(result.vectors):
        value: Any = (base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
                      if encoding_format == "base64" else row)
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens,
                      "total_tokens": result.prompt_tokens}}


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    gate.require(request[KEY], Scope.EMBEDDINGS)
    gate.check_capacity()
    req = parse_embeddings(await read_json(request))
    result = await request.app[EMBEDDINGS].embed(req, request[KEY], request[TRACE])
    body = orjson.dumps(embeddings_body(result, req.encoding_format),
                        option=orjson.OPT_SERIALIZE_NUMPY)
    return web.Response(body=body, content_type="application/json")


OPERATIONS = (
    Operation("POST", "/v1/embeddings", "sentence embeddings (MiniLM-L6, 384-d)",
              body=schema.EMBEDDINGS, errors=(404, 429, 503)),
)
