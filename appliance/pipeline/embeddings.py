"""``/v1/embeddings``: the shared sentence encoder behind the same admission as chat.

A request is scope-checked by the web layer; here it is charged to the key's buckets (1
request, its input tokens) and waits for a slot of the same bounded, fair queue as the
generations, then the encoder runs on a worker thread (never on the event loop). Token-id
inputs are ids of the encoder's vocabulary, framed and cut like a text's tokens.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyRecord
from appliance.api.embeddings import EmbeddingRequest
from appliance.encoder.sentence import Encoder, Vectors
from appliance.errors import InvalidRequest, ModelNotFound
from appliance.observability.trace import RequestTrace


@dataclass(frozen=True)
class Embeddings:
    vectors: Vectors  # (n, dim) float32, unit rows
    prompt_tokens: int
    model: str


class EmbeddingService:
    def __init__(self, encoder: Encoder, gate: Gate, model_id: str, *,
                 max_tokens: int) -> None:
        self.encoder = encoder
        self.gate = gate
        self.model_id = model_id
        self._max_tokens = max_tokens

    def check_model(self, name: str) -> None:
        if name not in ("default", self.model_id):
            raise ModelNotFound(f"the embedding model {name!r} does not exist; this server "
                                f"embeds with {self.model_id!r} (\"default\" names it)",
                                param="model")

    async def embed(self, req: EmbeddingRequest, key: KeyRecord,
                    trace: RequestTrace) -> Embeddings:
        self.check_model(req.model)
        if req.dimensions is not None and req.dimensions != self.encoder.dim:
            raise InvalidRequest(f"this model's embeddings have {self.encoder.dim} "
                                 f"dimensions; 'dimensions' cannot change that",
                                 param="dimensions")
        if req.token_ids:
            self._check_ids(req.token_ids)
            tokens = sum(len(self.encoder.frame(ids)) for ids in req.token_ids)
        else:
            tokens = sum(await asyncio.to_thread(self.encoder.token_counts, req.inputs))
        if tokens > self._max_tokens:
            raise InvalidRequest(f"the input holds {tokens} tokens; one call may hold at "
                                 f"most {self._max_tokens} (embeddings_max_tokens): split it",
                                 param="input")
        queued_at = time.perf_counter()
        async with self.gate.admit(key, tokens, 0):
            trace.queue_wait_s = time.perf_counter() - queued_at
            if req.token_ids:
                vectors = await asyncio.to_thread(self.encoder.encode_ids, req.token_ids)
            else:
                vectors = await asyncio.to_thread(self.encoder.encode, req.inputs)
        trace.prompt_tokens = tokens
        return Embeddings(vectors, tokens, self.model_id)

    def _check_ids(self, rows: tuple[tuple[int, ...], ...]) -> None:
        size = self.encoder.vocab_size
        for i, ids in enumerate(rows):
            if max(ids) >= size:
                raise InvalidRequest(f"input[{i}] holds token id {max(ids)}, outside the "
                                     f"vocabulary of {self.model_id!r} (0..{size - 1})",
                                     param="input")
