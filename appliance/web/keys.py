"""Typed application state keys (set while the app is wired, frozen after start-up)."""

from __future__ import annotations

from aiohttp import web

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyRecord
from appliance.cache import ResponseCache
from appliance.config import Settings
from appliance.embed import Encoder
from appliance.embeddings import EmbeddingService
from appliance.engine.engine import Engine
from appliance.engine.models import ModelStore, VerifiedModel
from appliance.memory import MemoryStore
from appliance.service import GenerationService
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex
from appliance.summarise import SessionSummariser
from appliance.trace import RequestTrace

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", ModelStore)
SERVED = web.AppKey("served", VerifiedModel)
ENGINE = web.AppKey("engine", Engine)
SERVICE = web.AppKey("service", GenerationService)
STARTED_AT = web.AppKey("started_at", float)
DATABASE = web.AppKey("database", Database)
GATE = web.AppKey("gate", Gate)
ENCODER = web.AppKey("encoder", Encoder)
# memory and cache (issue 5)
EMBEDDINGS = web.AppKey("embeddings", EmbeddingService)
CACHE = web.AppKey("cache", ResponseCache)
CACHE_INDEX = web.AppKey("cache_index", VectorIndex)
MEMORY = web.AppKey("memory", MemoryStore)
MEMORY_INDEX = web.AppKey("memory_index", VectorIndex)
SUMMARISER = web.AppKey("summariser", SessionSummariser)

# Per request: the authenticated API key.
KEY = web.RequestKey("api_key", KeyRecord)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
TRACE = web.RequestKey("trace", RequestTrace)
