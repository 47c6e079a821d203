"""A server deployed as a clinic would run it: keys exist (a chat key, an admin key, an
embeddings-only key, and a "lab" key whose policy flags what the classifiers catch instead
of blocking it, so that arbitrary text reaches the model), cache and memory on. Shared by
the fuzz and the hostile-input table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from appliance.admission.keys import KeyStore, Scope
from appliance.guards.policy import POLICIES_DIR
from appliance.store.db import Database
from tests.conftest import RunningServer, make_settings, start_server


@dataclass(frozen=True)
class KeyedServer:
    server: RunningServer
    chat: str  # the default scopes: chat, embeddings, memory
    admin: str
    embed_only: str
    lab: str  # classifiers flag, not block

    @property
    def base_url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    data = tmp_path_factory.mktemp("keyed-server")
    settings = make_settings(data, parallel=4, ctx_size=512, max_body_bytes=64 * 1024,
                             cache_enabled=True)
    default = (POLICIES_DIR / "default.toml").read_text()
    flagging = default.replace('name = "default"', 'name = "lab-flag"').replace(
        'action = "block"              #', 'action = "flag"               #').replace(
        'enabled = true\naction = "block"', 'enabled = true\naction = "flag"')
    assert flagging.count('\naction = "flag"') == 2, "the default policy changed shape"
    (data / "lab-flag.toml").write_text(flagging)
    with Database(settings.database) as db:
        store = KeyStore(db)
        chat = store.create_sync("clinic-chat").secret
        admin = store.create_sync("clinic-admin", scopes=[Scope.ADMIN]).secret
        embed_only = store.create_sync("clinic-embed", scopes=[Scope.EMBEDDINGS]).secret
        lab = store.create_sync("clinic-lab", guard_policy=str(data / "lab-flag.toml")).secret
    srv = start_server(settings)
    yield KeyedServer(srv, chat, admin, embed_only, lab)
    srv.close()
