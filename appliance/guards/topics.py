"""Topic rails: inputs close to a topic's example utterances get its configured answer.

A policy's ``[[topics]]`` name a handful of examples each; they are embedded once with the
shared encoder, and an input whose embedding (the one the input rail already computed) has a
cosine similarity of at least the topic's threshold to any example is answered with the
topic's ``answer`` without calling the model.

A topic with ``route = "large"`` instead of an answer never answers: :meth:`TopicRail.
routed` tells the ``auto`` model's rule that a text belongs to it (the text embedded here,
before admission: the rule decides the model before a slot is taken).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from appliance.guards.pipeline import Embedder
from appliance.guards.policy import Topic

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TopicMatch:
    topic: str
    similarity: float
    answer: str


class TopicRail:
    """The topics of one policy, with their examples embedded; immutable after init."""

    def __init__(self, topics: Sequence[Topic], encoder: Embedder) -> None:
        self.topics = tuple(topics)
        self._encoder = encoder
        rows = [(i, encoder.encode_one(example))
                for i, topic in enumerate(self.topics) for example in topic.examples]
        self._owner = np.array([i for i, _ in rows], dtype=np.int64)
        self._matrix = (np.stack([v for _, v in rows]).astype(np.float32) if rows
                        else np.zeros((0, 1), dtype=np.float32))
        self._thresholds = np.array([self.topics[i].threshold for i, _ in rows],
                                    dtype=np.float32)
        self._routes = np.array([bool(self.topics[i].route) for i, _ in rows], dtype=bool)

    @property
    def routes(self) -> bool:
        """Whether any topic routes (rather than answers)."""
        return bool(self._routes.any())

    def match(self, embedding: Vector | None) -> TopicMatch | None:
        """The answering topic whose nearest example is most similar, if over its
        threshold."""
        return self._best(embedding, ~self._routes)

    def routed(self, text: str) -> str | None:
        """The name of the routing topic ``text`` belongs to, if any (blocking: embeds)."""
        if not self.routes or not text.strip():
            return None
        found = self._best(self._encoder.encode_one(text), self._routes)
        return found.topic if found is not None else None

    def _best(self, embedding: Vector | None,
              allowed: npt.NDArray[np.bool_]) -> TopicMatch | None:
        if embedding is None or not len(self._owner):
            return None
        sims = self._matrix @ embedding.astype(np.float32)
        hits = np.flatnonzero((sims >= self._thresholds) & allowed)
        if not len(hits):
            return None
        best = int(hits[np.argmax(sims[hits])])
        topic = self.topics[int(self._owner[best])]
        return TopicMatch(topic.name, float(sims[best]), topic.answer)
