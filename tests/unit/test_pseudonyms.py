"""The install key and the keyed hashes of client-named ids."""

from __future__ import annotations

import hashlib
import hmac
import stat
import threading
from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.store.pseudonyms import INSTALL_KEY_FILE, Pseudonyms


def test_the_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    first = Pseudonyms.load_or_create(tmp_path)
    path = tmp_path / INSTALL_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes()
    assert len(key) == 32
    again = Pseudonyms.load_or_create(tmp_path)
    assert path.read_bytes() == key
    assert again.of("jane@example.org") == first.of("jane@example.org")
    assert [p.name for p in tmp_path.iterdir()] == [INSTALL_KEY_FILE]  # no temporary left


def test_a_hash_is_hmac_sha256_of_the_value_and_empty_stays_empty(tmp_path: Path) -> None:
    ids = Pseudonyms.load_or_create(tmp_path)
    key = (tmp_path / INSTALL_KEY_FILE).read_bytes()
    value = "4539 1488 0343 6467"
    assert ids.of(value) == hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
    assert value not in ids.of(value) and len(ids.of(value)) == 64
    assert ids.of("") == "" and ids.maybe("") is None and ids.maybe(None) is None
    assert ids.maybe("s1") == ids.of("s1") != ids.of("s2")
    assert ids.of("\ud800 lone surrogate")  # never raises on odd text


def test_another_install_hashes_differently(tmp_path: Path) -> None:
    a = Pseudonyms.load_or_create(tmp_path / "a")
    b = Pseudonyms.load_or_create(tmp_path / "b")
    assert a.of("alice") != b.of("alice")


def test_starting_twice_at_once_agrees_on_one_key(tmp_path: Path) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(Pseudonyms.load_or_create(tmp_path).of("alice"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [INSTALL_KEY_FILE]


def test_a_readable_key_is_narrowed_and_a_damaged_one_refused(tmp_path: Path) -> None:
    Pseudonyms.load_or_create(tmp_path)
    path = tmp_path / INSTALL_KEY_FILE
    path.chmod(0o644)
    Pseudonyms.load_or_create(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="install key"):
        Pseudonyms.load_or_create(tmp_path)
