"""The engines of one server, built once by the wiring: the embedded llama.cpp engine (when
configured) with its tokenizer, the upstream engines and the client session they share,
one admission lane per engine, and the routing over them (catalog, health, router).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.admission.gate import Gate
from appliance.admission.queue import AdmissionQueue
from appliance.config import Settings
from appliance.config_engines import EMBEDDED, OPENAI
from appliance.engine.cpu_turns import CpuTurns
from appliance.engine.engine import Engine
from appliance.engine.engine_config import EngineConfig
from appliance.engine.models import ServedModel
from appliance.engine.tokenizer import Tokenizer
from appliance.errors import ConfigError
from appliance.observability.engine_metrics import EngineView
from appliance.routing.auto import AutoRule
from appliance.routing.catalog import Catalog
from appliance.routing.health import Health
from appliance.routing.router import Router
from appliance.upstream.client import UpstreamEngine
from appliance.upstream.http import HttpClient


@dataclass(frozen=True)
class EngineSet:
    embedded: Engine | None
    served: ServedModel | None  # the embedded engine's model
    tokenizer: Tokenizer | None  # the embedded model's
    upstreams: tuple[UpstreamEngine, ...]
    http: HttpClient
    catalog: Catalog
    router: Router


def lanes(settings: Settings) -> dict[str, AdmissionQueue]:
    """One admission queue per engine: its slots, the shared depth and timeout."""
    out = {}
    for e in settings.engines:
        slots = settings.parallel if e.kind == EMBEDDED else e.max_concurrent
        out[e.name] = AdmissionQueue(slots=slots, depth=settings.queue_depth,
                                     timeout_s=settings.queue_timeout_s)
    return out


def build_engines(settings: Settings, served: ServedModel | None, turns: CpuTurns | None,
                  load: Callable[[str], int]) -> EngineSet:
    """``load``: a lane's outstanding requests (the gate's), for least-outstanding routing."""
    embedded = tokenizer = None
    config = next((e for e in settings.engines if e.kind == EMBEDDED), None)
    if config is not None and served is not None:
        embedded = Engine(EngineConfig(
            model_path=served.model.path, parallel=settings.parallel,
            ctx_size=settings.ctx_size, batch_size=settings.batch_size,
            n_threads=settings.n_threads, n_gpu_layers=settings.n_gpu_layers,
            split_mode=settings.split_mode, main_gpu=settings.main_gpu,
            prefix_reuse_min=settings.prefix_reuse_min, default_seed=settings.seed,
            name=config.name), turns=turns)
        tokenizer = Tokenizer(embedded, model_id=served.id,
                              use_template=served.model.spec.chat_template != "none",
                              template_fallback=settings.chat_template_fallback)
    http = HttpClient()
    upstreams = tuple(UpstreamEngine(e, http) for e in settings.engines if e.kind == OPENAI)
    health = {u.name: Health(eject_after=settings.upstream_eject_failures,
                             backoff_s=settings.upstream_backoff_s) for u in upstreams}
    if bool(settings.auto_small) != bool(settings.auto_large):
        raise ConfigError("auto_small and auto_large go together (both, or neither)")
    auto = (AutoRule(settings.auto_small, settings.auto_large, settings.auto_prompt_tokens)
            if settings.auto_small else None)
    catalog = Catalog(served, upstreams, embedded_engine=config.name if config else EMBEDDED,
                      default_model=settings.default_model, auto=auto)
    return EngineSet(embedded, served, tokenizer, upstreams, http, catalog,
                     Router(embedded, upstreams, health, load))


def engine_views(engines: EngineSet, gate: Gate) -> list[EngineView]:
    """Each engine as ``/ready`` and the metrics see it."""
    rows = []
    if engines.embedded is not None:
        stats = gate.stats(engines.embedded.name)
        rows.append(EngineView(engines.embedded.name, EMBEDDED, engines.embedded.ready,
                               stats.running + stats.queued, stats.slots))
    for upstream in engines.upstreams:
        stats = gate.stats(upstream.name)
        health = engines.router.health(upstream.name)
        assert health is not None
        rows.append(EngineView(upstream.name, OPENAI, health.available,
                               stats.running + stats.queued, stats.slots,
                               health.total_failures, health.total_ejections))
    return rows
