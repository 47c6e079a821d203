"""Model names to routes: what a request's ``model`` means on this server.

Names: the embedded engine's model (its manifest id or file name), every model an upstream
serves (configured, or discovered from its ``/v1/models``), ``default`` (the
``default_model`` setting; else the embedded model, else the first upstream model) and
``auto`` (see :mod:`appliance.routing.auto`). An upstream model with the embedded model's
id is the embedded one. Unknown names are a 404 ``model_not_found`` that says what is
served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from appliance.engine.models import ServedModel
from appliance.errors import ModelNotFound, Unavailable
from appliance.routing.auto import AutoChoice, AutoHints, AutoRule, choose

DEFAULT, AUTO = "default", "auto"


class ModelSource(Protocol):
    """An upstream engine as the catalog sees it."""

    @property
    def name(self) -> str: ...

    @property
    def models(self) -> tuple[str, ...]: ...

    @property
    def max_tokens(self) -> int: ...


@dataclass(frozen=True)
class Route:
    model: str  # the id the answer's ``model`` field names
    embedded: bool  # served by the embedded engine: the prompt is tokenised here
    max_tokens: int | None = None  # upstream: completion tokens when a request gives none
    fingerprint: str | None = None  # the answers' system_fingerprint (embedded model file)
    reason: str | None = None  # ``auto``: why this model (see routing.auto)


@dataclass(frozen=True)
class Listed:
    """One row of ``/v1/models``."""

    id: str
    engines: tuple[str, ...]
    alias_of: str | None = None  # ``default`` and ``auto``


class Catalog:
    def __init__(self, served: ServedModel | None, upstreams: Sequence[ModelSource] = (), *,
                 embedded_engine: str = "embedded", default_model: str = "",
                 auto: AutoRule | None = None) -> None:
        self.served = served
        self._upstreams = tuple(upstreams)
        self._embedded_engine = embedded_engine
        self._default = default_model
        self.auto = auto

    def resolve(self, name: str) -> Route:
        """The route of a model name (``auto``: see :meth:`choose`); 404 if none serves it."""
        if name == DEFAULT:
            name = self.default_model()
        served = self.served
        if served is not None and name in (served.id, served.model.spec.file):
            return Route(served.id, True, fingerprint=served.fingerprint)
        engines = [u for u in self._upstreams if name in u.models]
        if engines:
            return Route(name, False, max_tokens=min(u.max_tokens for u in engines))
        raise self._not_found(name)

    def choose(self, hints: AutoHints) -> Route:
        """``auto``: the small or the large model, by the rule."""
        assert self.auto is not None
        picked: AutoChoice = choose(self.auto, hints)
        route = self.resolve(picked.model)
        return Route(route.model, route.embedded, route.max_tokens, route.fingerprint,
                     picked.reason)

    def is_auto(self, name: str) -> bool:
        if name != AUTO:
            return False
        if self.auto is None:
            raise ModelNotFound("the model 'auto' is not configured on this server (set "
                                "auto_small and auto_large)", param="model")
        return True

    def default_model(self) -> str:
        if self._default:
            return self._default
        if self.served is not None:
            return self.served.id
        for upstream in self._upstreams:
            if upstream.models:
                return upstream.models[0]
        raise Unavailable("no upstream engine has reported its models yet; retry shortly",
                          retry_after=5)

    def listing(self) -> list[Listed]:
        """Every model and the engines serving it, then the aliases."""
        rows: dict[str, list[str]] = {}
        if self.served is not None:
            rows[self.served.id] = [self._embedded_engine]
        for upstream in self._upstreams:
            for model in upstream.models:
                if self.served is None or model != self.served.id:
                    rows.setdefault(model, []).append(upstream.name)
        out = [Listed(model, tuple(engines)) for model, engines in rows.items()]
        try:
            default = self.default_model()
        except Unavailable:
            default = ""
        if default in rows:
            out.insert(0, Listed(DEFAULT, tuple(rows[default]), default))
        if self.auto is not None:
            engines = tuple(dict.fromkeys(rows.get(self.auto.small, []) +
                                          rows.get(self.auto.large, [])))
            out.append(Listed(AUTO, engines, f"{self.auto.small}|{self.auto.large}"))
        return out

    def upstream_models(self) -> set[str]:
        return {m for u in self._upstreams for m in u.models}

    def _not_found(self, name: str) -> ModelNotFound:
        served = sorted({row.id for row in self.listing()} - {DEFAULT, AUTO})
        names = ", ".join(repr(m) for m in served) or "none yet"
        if self.served is not None and any(s.id == name for s in self.served.manifest):
            return ModelNotFound(
                f"model {name!r} is in the manifest but not loaded; this server serves "
                f"{names} (\"default\" names {self.default_model()!r}; or restart with "
                f"--model {name})", param="model")
        return ModelNotFound(f"the model {name!r} does not exist; this server serves "
                             f"{names} (\"default\" always names one)", param="model")
