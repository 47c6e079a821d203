"""Routing without I/O: health with a manual clock, the auto rule, the catalog and the
router's least-outstanding pick (plain objects stand in for upstream engines here; the
end-to-end tests in tests/e2e/test_upstream.py use real llama-server processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from appliance.admission.clock import ManualClock
from appliance.engine.types import GenerationRequest
from appliance.errors import ModelNotFound, Unavailable
from appliance.routing.auto import AutoHints, AutoRule, choose
from appliance.routing.catalog import Catalog
from appliance.routing.health import MAX_FACTOR, Health
from appliance.routing.router import Router


def test_health_ejects_after_consecutive_failures_and_readmits_after_the_backoff() -> None:
    clock = ManualClock()
    h = Health(eject_after=3, backoff_s=10.0, clock=clock)
    assert not h.failure() and not h.failure()
    h.success()  # the count is of failures in a row
    assert not h.failure() and not h.failure() and h.state == "up"
    assert h.failure() and h.state == "ejected" and not h.available
    assert h.retry_after() == 10.0
    h.success()  # a success during the back-off does not shorten it
    assert h.state == "ejected"
    clock.advance(10.0)
    assert h.state == "probation" and h.available
    assert h.failure() and h.state == "ejected"  # one failure on probation: out again
    assert h.retry_after() == 20.0  # twice as long
    clock.advance(20.0)
    h.success()
    assert h.state == "up" and h.failures == 0 and h.ejections == 0
    assert (h.total_failures, h.total_ejections) == (6, 2)


def test_the_backoff_doubles_up_to_its_cap() -> None:
    clock = ManualClock()
    h = Health(eject_after=1, backoff_s=1.0, clock=clock)
    waits = []
    for _ in range(9):
        h.failure()
        waits.append(h.retry_after())
        clock.advance(h.retry_after())
    assert waits == [1, 2, 4, 8, 16, 32, MAX_FACTOR, MAX_FACTOR, MAX_FACTOR]


@pytest.mark.parametrize(("hints", "model", "reason"), [
    (AutoHints(10), "small", "small"),
    (AutoHints(101), "large", "prompt_tokens"),
    (AutoHints(100), "small", "small"),
    (AutoHints(10, structured=True), "large", "structured"),
    (AutoHints(10, topic="oncology"), "large", "topic"),
    (AutoHints(500, structured=True, topic="x"), "large", "structured"),
])
def test_the_auto_rule(hints: AutoHints, model: str, reason: str) -> None:
    got = choose(AutoRule("small", "large", prompt_tokens=100), hints)
    assert (got.model, got.reason) == (model, reason)


@dataclass
class _Upstream:
    """An engine's routing surface (name, models) without a server behind it."""

    name: str
    models: tuple[str, ...]
    max_tokens: int = 512
    remote: bool = True
    submitted: list[GenerationRequest] = field(default_factory=list)

    def submit(self, request: GenerationRequest) -> object:
        raise AssertionError("routing never submits")


def test_catalog_resolves_default_auto_and_unknown_names() -> None:
    a, b = _Upstream("a", ("big", "mid")), _Upstream("b", ("big",), max_tokens=128)
    catalog = Catalog(None, [a, b], auto=AutoRule("mid", "big", 100))
    assert catalog.default_model() == "big"
    route = catalog.resolve("default")
    assert (route.model, route.embedded, route.max_tokens) == ("big", False, 128)
    assert catalog.is_auto("auto") and not catalog.is_auto("big")
    assert catalog.choose(AutoHints(5)).model == "mid"
    chosen = catalog.choose(AutoHints(500))
    assert (chosen.model, chosen.reason) == ("big", "prompt_tokens")
    with pytest.raises(ModelNotFound, match="'nope' does not exist; this server serves 'big', "
                                            "'mid'"):
        catalog.resolve("nope")
    listing = {m.id: m for m in catalog.listing()}
    assert listing["big"].engines == ("a", "b") and listing["mid"].engines == ("a",)
    assert listing["default"].alias_of == "big" and listing["auto"].alias_of == "mid|big"
    with pytest.raises(ModelNotFound, match="'auto' is not configured"):
        Catalog(None, [a]).is_auto("auto")


def test_no_models_yet_is_a_503_not_a_404() -> None:
    with pytest.raises(Unavailable, match="reported its models"):
        Catalog(None, [_Upstream("a", ())]).resolve("default")


def test_the_router_picks_the_least_outstanding_healthy_engine_in_turn() -> None:
    clock = ManualClock()
    a, b, c = _Upstream("a", ("m",)), _Upstream("b", ("m",)), _Upstream("c", ("other",))
    load = {"a": 0, "b": 0, "c": 0}
    health = {n: Health(eject_after=2, backoff_s=5.0, clock=clock) for n in load}
    router = Router(None, [a, b, c], health, load.__getitem__)
    route = Catalog(None, [a, b, c]).resolve("m")
    assert {router.pick(route).name for _ in range(4)} == {"a", "b"}  # ties in turn
    load["a"] = 3
    assert [router.pick(route).name for _ in range(3)] == ["b", "b", "b"]
    assert router.pick(route, exclude=["b"]).name == "a"
    assert not router.report("b", False) and router.report("b", False)  # ejected
    assert [router.pick(route).name for _ in range(2)] == ["a", "a"]
    router.report("a", False)
    router.report("a", False)
    with pytest.raises(Unavailable) as refused:
        router.pick(route)
    assert refused.value.retry_after == pytest.approx(5.0)
    clock.advance(5.0)
    assert router.pick(route).name in ("a", "b")  # back on probation
