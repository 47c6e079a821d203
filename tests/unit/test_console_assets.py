"""The console's files as the server holds them: every file the page loads is there, with
its type, a gzip copy and an ETag; the headers forbid inline scripts and framing."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from appliance.config import REPO_ROOT
from appliance.web.console_assets import (
    CONSOLE_DIR,
    CSP,
    INDEX,
    SECURITY_HEADERS,
    ConsoleAssets,
)
from appliance.web.wiring import console_enabled
from tests.conftest import make_settings


def test_every_referenced_file_is_served_with_its_type() -> None:
    assets = ConsoleAssets.load(enabled=True)
    index = assets.get(INDEX)
    assert index is not None and index.content_type.startswith("text/html")
    html = index.body.decode()
    referenced = set(re.findall(r'(?:src|href)="/console/([^"]+)"', html))
    for js in CONSOLE_DIR.glob("*.js"):  # module imports: './x.js'
        referenced |= set(re.findall(r"from '\./([^']+)'", js.read_text()))
    assert {"app.js", "console.css", "chat.js", "markdown.js"} <= referenced
    for name in referenced:
        asset = assets.get(name)
        assert asset is not None, f"{name} is referenced but not served"
        assert gzip.decompress(asset.gzipped) == asset.body
        assert asset.etag.startswith('"') and asset.etag.endswith('"')
    assert assets.get("../config.py") is None and assets.get(".hidden") is None


def test_no_inline_script_or_style_and_nothing_from_elsewhere() -> None:
    for path in CONSOLE_DIR.iterdir():
        text = path.read_text()
        assert "innerHTML" not in text and "outerHTML" not in text, path.name
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), (
            f"{path.name} names another origin")
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline script"
            assert "style=" not in text and "<style" not in text, "inline style"
            assert not re.search(r"\son[a-z]+=", text), "inline event handler"


def test_security_headers() -> None:
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert "frame-ancestors 'none'" in CSP and "default-src 'self'" in CSP
    assert SECURITY_HEADERS["X-Frame-Options"] == "DENY"
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"


def test_off_means_no_files(tmp_path: Path) -> None:
    assert ConsoleAssets.load(enabled=False).get(INDEX) is None


def test_on_by_default_only_on_loopback(tmp_path: Path) -> None:
    assert console_enabled(make_settings(tmp_path))
    assert not console_enabled(make_settings(tmp_path, host="0.0.0.0"))
    assert console_enabled(make_settings(tmp_path, host="0.0.0.0", console=True))
    assert not console_enabled(make_settings(tmp_path, console=False))


def test_assets_are_package_data_and_in_the_bundle() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    for suffix in ("html", "js", "css", "svg"):
        assert f'"web/console/*.{suffix}"' in pyproject
        assert any(CONSOLE_DIR.glob(f"*.{suffix}"))
    assert "web/console" in (REPO_ROOT / "build" / "appliance.spec").read_text()
