"""The one place the appliance is put together: settings in, every component out.

Each object is built once, with its collaborators passed in, in dependency order:
model files (verified) -> encoder -> install key and database -> gate (a lane per engine)
-> the engines (embedded and upstream) and the routing over them -> guards state -> cache
and memory -> the pipeline's stages -> the pipeline. Nothing is assigned onto a built
object afterwards; what changes at run time (the engine loading its model, the guards
loading theirs, an upstream's discovered models and health, the client session opened on
the loop) is the state of an object made for it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyStore
from appliance.admission.limiter import RateLimiter
from appliance.cache.response import TABLE as CACHE_TABLE
from appliance.cache.response import CacheConfig, ResponseCache
from appliance.config import Settings
from appliance.config_engines import EMBEDDED
from appliance.encoder.sentence import Encoder, load_encoder_spec
from appliance.engine.cpu_turns import CpuTurns
from appliance.engine.engine_config import BATCH_SIZE_BOUNDS
from appliance.engine.models import ModelStore, ServedModel
from appliance.errors import ConfigError
from appliance.guards.policy import load_policy, presets
from appliance.guards.readiness import GuardsState
from appliance.memory.memories import DAY, MemoryConfig, MemoryStore
from appliance.memory.memories import TABLE as MEMORY_TABLE
from appliance.memory.summarise import SessionSummariser, SummaryConfig
from appliance.observability.audit import Audit
from appliance.observability.metrics import EngineGauges, Metrics
from appliance.observability.redaction import Scrubber
from appliance.pipeline.cache_stage import CacheStage
from appliance.pipeline.embeddings import EmbeddingService
from appliance.pipeline.guard_check import GuardCheck
from appliance.pipeline.input_stage import InputStage
from appliance.pipeline.memory_stage import MemoryStage
from appliance.pipeline.memory_write import MemoryWriter
from appliance.pipeline.orchestrator import Pipeline
from appliance.pipeline.output_stage import OutputStage
from appliance.pipeline.prepare import Preparer
from appliance.store.db import Database
from appliance.store.pseudonyms import Pseudonyms
from appliance.store.vectors import IndexParams, VectorIndex
from appliance.web.console_assets import ConsoleAssets
from appliance.web.engines import EngineSet, build_engines, engine_views, lanes


@dataclass(frozen=True)
class Components:
    settings: Settings
    models: ModelStore
    encoder: Encoder
    database: Database
    gate: Gate
    engines: EngineSet
    guards: GuardsState
    cache: ResponseCache
    cache_index: VectorIndex
    memory: MemoryStore
    memory_index: VectorIndex
    memory_writer: MemoryWriter
    pipeline: Pipeline
    summariser: SessionSummariser
    embeddings: EmbeddingService
    guard_check: GuardCheck
    metrics: Metrics
    audit: Audit
    pseudonyms: Pseudonyms
    scrubber: Scrubber
    keys: KeyStore
    console: ConsoleAssets


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build(settings: Settings) -> Components:
    """Resolve and verify the model (sha256) and everything else before anything listens;
    the engine loads the model in its own thread once the server is up (see /ready). With
    only upstream engines configured, no local model is resolved."""
    models = ModelStore(settings.manifest, settings.models_dir)
    served = (ServedModel(models.verify(models.resolve(settings.model)), models.specs)
              if any(e.kind == EMBEDDED for e in settings.engines) else None)
    if settings.guards:
        load_policy(settings.guard_policy)  # a bad policy stops start-up with its error
    # CPU turn-taking between the engine and the encoder (see engine/cpu_turns.py); with
    # layers offloaded to a GPU the engine's decode leaves the CPU to the encoder.
    turns = CpuTurns() if settings.cpu_turns and settings.n_gpu_layers == 0 else None
    encoder = Encoder.from_manifest(threads=settings.guard_threads, turns=turns)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ids = Pseudonyms.load_or_create(settings.data_dir)
    db = Database(settings.database, pseudonyms=ids)
    try:
        return _build_on(settings, models, served, encoder, turns, db, ids)
    except BaseException:
        db.close()
        raise


def console_enabled(settings: Settings) -> bool:
    """The ``console`` setting, or by default: on when bound to loopback."""
    return is_loopback(settings.host) if settings.console is None else settings.console


def _gate(settings: Settings, keys: KeyStore) -> Gate:
    open_access = is_loopback(settings.host)
    if not open_access and not keys.list_sync(include_revoked=False):
        raise ConfigError(
            f"refusing to serve on {settings.host} (not loopback) without API keys: create "
            f"one with `appliance keys create --name NAME --data-dir {settings.data_dir}`, "
            f"or bind 127.0.0.1")
    return Gate(keys, RateLimiter(), lanes(settings), open_access=open_access,
                key_count_ttl_s=settings.key_cache_ttl)


def _build_on(settings: Settings, models: ModelStore, served: ServedModel | None,
              encoder: Encoder, turns: CpuTurns | None, db: Database,
              ids: Pseudonyms) -> Components:
    keys = KeyStore(db, cache_ttl_s=settings.key_cache_ttl)
    gate = _gate(settings, keys)
    engines = build_engines(settings, served, turns, gate.outstanding)
    tokenizer, engine = engines.tokenizer, engines.embedded
    guards = GuardsState(enabled=settings.guards)
    audit = Audit(db)
    stores = _stores(settings, db, encoder, audit)
    cache, memory = stores.cache, stores.memory
    inputs = InputStage(guards)
    cache_stage = (CacheStage(cache, gate, tokenizer, catalog=engines.catalog,
                              model_sha256=served.model.sha256 if served else None)
                   if settings.cache_enabled else None)
    memory_stage = MemoryStage(memory, tokenizer) if settings.memory_enabled else None
    prepare = Preparer(engines.catalog, inputs, tokenizer=tokenizer,
                       ctx_size=settings.ctx_size, memory=memory_stage, cache=cache_stage,
                       max_n=min(settings.max_n, settings.parallel))
    pipeline = Pipeline(engines.router, gate, prepare, inputs,
                        OutputStage(guards, holdback_tokens=settings.guard_holdback_tokens),
                        cache=cache_stage, memory=memory_stage)
    summariser = SessionSummariser(memory, pipeline.summarise, SummaryConfig(
        threshold_tokens=settings.memory_summary_tokens))

    def gauges() -> EngineGauges:
        waiting = gate.stats()
        if engine is None:
            return EngineGauges(0, waiting.queued, 0.0, [0] * (len(BATCH_SIZE_BOUNDS) + 1),
                                0.0)
        stats = engine.stats
        total = stats.kv_cells_total
        return EngineGauges(
            sequences_running=stats.running, queue_depth=waiting.queued,
            kv_cache_usage_ratio=stats.kv_cells_used / total if total else 0.0,
            batch_size_buckets=list(stats.batch_size_counts),
            batch_size_sum=float(stats.batch_size_sum))

    return Components(
        settings=settings, models=models, encoder=encoder, database=db,
        gate=gate, engines=engines, guards=guards, cache=cache, cache_index=stores.cache_index,
        memory=memory, memory_index=stores.memory_index,
        memory_writer=MemoryWriter(memory, inputs), pipeline=pipeline, summariser=summariser,
        embeddings=EmbeddingService(encoder, gate, load_encoder_spec().id,
                                    max_tokens=settings.embeddings_max_tokens),
        guard_check=GuardCheck(guards, gate, encoder, max_tokens=settings.guard_max_tokens),
        metrics=Metrics(gauges, key_labels=settings.metrics_key_labels,
                        engines=lambda: engine_views(engines, gate),
                        guard_reused=lambda: _guards_reused(guards)), audit=audit,
        pseudonyms=ids, scrubber=_scrubber(settings), keys=keys,
        console=ConsoleAssets.load(enabled=console_enabled(settings)))


def _guards_reused(guards: GuardsState) -> dict[str, int]:
    """The texts the guard network was spared so far, per direction (0 before the guards
    load)."""
    if guards.status != "ready":
        return {"input": 0, "output": 0}
    network = guards.get().network
    return {"input": network.remembered.reused, "output": network.remembered_windows.reused}


def _scrubber(settings: Settings) -> Scrubber:
    """Log and request-id redaction with the record patterns of every preset and of the
    server's policy (a key's own policy file is not known before its requests come)."""
    policies = [*presets(), *([settings.guard_policy] if settings.guards else [])]
    return Scrubber.for_policies(dict.fromkeys(policies))


@dataclass(frozen=True)
class _Stores:
    cache: ResponseCache
    cache_index: VectorIndex
    memory: MemoryStore
    memory_index: VectorIndex


def _stores(settings: Settings, db: Database, encoder: Encoder, audit: Audit) -> _Stores:
    """The response cache and tiered memory, each with its vector index."""
    params = IndexParams(dim=encoder.dim, m=settings.vector_m,
                         ef_construction=settings.vector_ef_construction,
                         ef_search=settings.vector_ef_search)
    cache_index = VectorIndex(db, CACHE_TABLE, settings.data_dir / "vectors" / CACHE_TABLE,
                              params)
    cache = ResponseCache(db, cache_index, encoder, CacheConfig(
        ttl_s=settings.cache_ttl_s, threshold=settings.cache_threshold,
        max_entries=settings.cache_max_entries,
        max_temperature=settings.cache_max_temperature))
    memory_index = VectorIndex(db, MEMORY_TABLE,
                               settings.data_dir / "vectors" / MEMORY_TABLE, params)
    memory = MemoryStore(db, memory_index, encoder, audit=audit, config=MemoryConfig(
        session_ttl_s=settings.memory_session_ttl_h * 3600.0,
        user_ttl_s=settings.memory_user_ttl_days * DAY,
        max_entries=settings.memory_max_entries,
        inject_max_entries=settings.memory_inject_max_entries,
        inject_token_budget=settings.memory_inject_tokens,
        session_turns=settings.memory_session_turns,
        min_similarity=settings.memory_min_similarity))
    return _Stores(cache, cache_index, memory, memory_index)
