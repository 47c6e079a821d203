"""``Recent``: results kept for the texts asked for last, and a text being computed waited for."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from appliance.guards.recent import Recent


class Compute:
    """Counts its calls per text; can hold a text until told, or raise."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.started = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self.fail = False

    def __call__(self, text: str) -> str:
        self.calls[text] += 1
        self.started.set()
        assert self.go.wait(10), "never released"
        if self.fail:
            raise ValueError(f"cannot score {text!r}")
        return text.upper()


def test_a_text_is_computed_once_and_kept() -> None:
    recent: Recent[str] = Recent(4)
    compute = Compute()
    assert recent.get("system prompt", compute) == "SYSTEM PROMPT"
    assert recent.get("system prompt", compute) == "SYSTEM PROMPT"
    assert recent.get("another", compute) == "ANOTHER"
    assert compute.calls == {"system prompt": 1, "another": 1}
    assert recent.reused == 1 and len(recent) == 2


def test_the_least_recently_asked_text_goes_first() -> None:
    recent: Recent[str] = Recent(2)
    compute = Compute()
    for text in ("a", "b", "a", "c"):  # "a" asked again, so "b" is the one to go
        recent.get(text, compute)
    assert len(recent) == 2
    recent.get("a", compute)
    recent.get("b", compute)
    assert compute.calls == {"a": 1, "b": 2, "c": 1}


def test_texts_that_differ_in_one_character_are_different() -> None:
    recent: Recent[str] = Recent(8)
    compute = Compute()
    for text in ("ok", "ok ", "Ok", "o\u200bk", "\ud800 lone surrogate"):
        recent.get(text, compute)
    assert sum(compute.calls.values()) == 5 and recent.reused == 0


def test_a_text_being_computed_is_waited_for_not_computed_again() -> None:
    recent: Recent[str] = Recent(4)
    compute = Compute()
    compute.go.clear()
    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(recent.get("burst", compute)))
    first.start()
    assert compute.started.wait(10)
    second = threading.Thread(target=lambda: results.append(recent.get("burst", compute)))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # waiting for the first thread's run, not running its own
    compute.go.set()
    first.join(10)
    second.join(10)
    assert results == ["BURST", "BURST"] and compute.calls == {"burst": 1}
    assert recent.reused == 1


def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    recent: Recent[str] = Recent(4)
    compute = Compute()
    compute.go.clear()
    compute.fail = True
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            recent.get("bad", compute)
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    threads[0].start()
    assert compute.started.wait(10)
    for t in threads[1:]:
        t.start()
    compute.go.set()
    for t in threads:
        t.join(10)
    assert len(errors) == 3 and compute.calls == {"bad": 1} and len(recent) == 0
    compute.fail = False
    assert recent.get("bad", compute) == "BAD"  # asked again: computed again
    assert compute.calls == {"bad": 2}


def test_the_caller_of_a_failed_run_gets_its_exception() -> None:
    recent: Recent[str] = Recent(4)
    compute = Compute()
    compute.fail = True
    with pytest.raises(ValueError, match="cannot score 'x'"):
        recent.get("x", compute)


def test_peek_answers_from_kept_results_only() -> None:
    recent: Recent[str] = Recent(2)
    compute = Compute()
    assert recent.peek("The ") is None  # never computed: nothing is run for it
    assert compute.calls == {} and recent.reused == 0
    recent.get("The ", compute)
    assert recent.peek("The ") == "THE " and recent.reused == 1
    recent.get("A ", compute)
    assert recent.peek("The ") == "THE "  # peeked: the most recent now
    recent.get("In ", compute)  # the oldest, "A ", makes room
    assert recent.peek("A ") is None and recent.peek("The ") == "THE "
    assert compute.calls == {"The ": 1, "A ": 1, "In ": 1}
