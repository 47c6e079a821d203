"""The console's tests: one real server with the real model and API keys (an administrator,
and clinic staff under the clinic policy), and a real headless Chromium from the
distribution's packages driven through its chromedriver.

Where chromium or chromedriver is missing (and `make test` could not install them: not root,
or no apt-get) the browser tests are skipped with a loud message; with CI set they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from appliance.admission.keys import KeyStore, Scope
from appliance.store.db import Database
from tests.conftest import RunningServer, make_settings, start_server

_MISSING: list[str] = []


@dataclass
class ConsoleServer:
    server: RunningServer
    admin: str  # secrets
    staff: str

    @property
    def url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    data = tmp_path_factory.mktemp("console")
    settings = make_settings(data, parallel=4, ctx_size=2048, cache_sweep_interval_s=3600)
    with Database(settings.database) as db:
        store = KeyStore(db)
        admin = store.create_sync("admin", scopes=[Scope.ADMIN]).secret
        staff = store.create_sync("staff", scopes=[Scope.CHAT, Scope.MEMORY],
                                  guard_policy="clinic").secret
    srv = start_server(settings)
    yield ConsoleServer(srv, admin, staff)
    srv.close()


def browser_paths() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return None
    return chromium, driver


def require_browser() -> tuple[str, str]:
    paths = browser_paths()
    try:
        import selenium  # noqa: F401
    except ImportError:
        paths = None
    if paths is None:
        message = ("BROWSER TESTS SKIPPED: chromium and chromedriver (Debian: apt-get install "
                   "chromium chromium-driver) or selenium are missing; `make test` installs "
                   "them when run as root on Debian")
        if os.environ.get("CI"):
            pytest.fail(message.replace("SKIPPED", "CANNOT RUN (CI is set)"))
        _MISSING.append(message)
        pytest.skip(message)
    return paths


def new_driver(window: tuple[int, int] = (1280, 800)) -> Any:
    """A headless Chromium whose page area is exactly ``window`` (CSS pixels)."""
    chromium, chromedriver = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-default-apps", "--disable-sync",
                "--metrics-recording-only", "--no-default-browser-check",
                f"--window-size={window[0]},{window[1] + 200}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False})
    driver.set_script_timeout(60)
    return driver


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = new_driver()
    yield driver
    driver.quit()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _MISSING:
        terminalreporter.write_sep("!", _MISSING[0], red=True, bold=True)
