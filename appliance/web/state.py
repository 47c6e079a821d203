"""Typed application state keys (set once by the wiring, frozen after start-up) and the
per-request keys the middleware sets."""

from __future__ import annotations

from aiohttp import web

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyRecord, KeyStore
from appliance.cache.response import ResponseCache
from appliance.config import Settings
from appliance.encoder.sentence import Encoder
from appliance.engine.models import ModelStore
from appliance.guards.readiness import GuardsState
from appliance.memory.memories import MemoryStore
from appliance.memory.summarise import SessionSummariser
from appliance.observability.audit import Audit
from appliance.observability.metrics import Metrics
from appliance.observability.redaction import Scrubber
from appliance.observability.trace import RequestTrace
from appliance.pipeline.embeddings import EmbeddingService
from appliance.pipeline.guard_check import GuardCheck
from appliance.pipeline.memory_write import MemoryWriter
from appliance.pipeline.orchestrator import Pipeline
from appliance.store.db import Database
from appliance.store.pseudonyms import Pseudonyms
from appliance.store.vectors import VectorIndex
from appliance.web.console_assets import ConsoleAssets
from appliance.web.engines import EngineSet

SETTINGS = web.AppKey("settings", Settings)
MODELS = web.AppKey("models", ModelStore)
ENGINES = web.AppKey("engines", EngineSet)
PIPELINE = web.AppKey("pipeline", Pipeline)
STARTED_AT = web.AppKey("started_at", float)
DATABASE = web.AppKey("database", Database)
GATE = web.AppKey("gate", Gate)
ENCODER = web.AppKey("encoder", Encoder)
GUARDS = web.AppKey("guards", GuardsState)
GUARD_CHECK = web.AppKey("guard_check", GuardCheck)
EMBEDDINGS = web.AppKey("embeddings", EmbeddingService)
CACHE = web.AppKey("cache", ResponseCache)
CACHE_INDEX = web.AppKey("cache_index", VectorIndex)
MEMORY = web.AppKey("memory", MemoryStore)
MEMORY_WRITER = web.AppKey("memory_writer", MemoryWriter)
MEMORY_INDEX = web.AppKey("memory_index", VectorIndex)
SUMMARISER = web.AppKey("summariser", SessionSummariser)
METRICS = web.AppKey("metrics", Metrics)
AUDIT = web.AppKey("audit", Audit)
OPENAPI = web.AppKey("openapi", bytes)  # the rendered document (see openapi.py)
PSEUDONYMS = web.AppKey("pseudonyms", Pseudonyms)  # client-named ids -> keyed hashes
SCRUBBER = web.AppKey("scrubber", Scrubber)  # PII out of logs and request ids
KEYS = web.AppKey("keys", KeyStore)
CONSOLE = web.AppKey("console", ConsoleAssets)

# Per request: the authenticated API key, the request id, the trace of what happened.
KEY = web.RequestKey("api_key", KeyRecord)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
TRACE = web.RequestKey("trace", RequestTrace)
