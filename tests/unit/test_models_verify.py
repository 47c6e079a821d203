"""`appliance models verify`: every pinned file, a progress bar only when asked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance import cli, config
from appliance.engine.models import ModelStore
from appliance.tools.pins import all_pins, check_pin
from appliance.tools.progress import ProgressBar


def test_all_pins_cover_models_encoder_and_guards() -> None:
    s = config.load(env={})
    pins = all_pins(ModelStore(s.manifest, s.models_dir))
    labels = [p.label for p in pins]
    assert "model smollm2-135m-instruct" in labels
    assert {"encoder model", "encoder tokenizer"} <= set(labels)
    assert any(label.startswith("guard guardnet/") for label in labels)
    only = all_pins(ModelStore(s.manifest, s.models_dir), ["smollm2-135m-instruct"])
    assert [p.label for p in only] == ["model smollm2-135m-instruct"]


def test_a_tampered_file_fails_its_pin(tmp_path: Path) -> None:
    s = config.load(env={})
    pin = next(p for p in all_pins(ModelStore(s.manifest, s.models_dir))
               if p.label == "guard guardnet/labels.json")
    assert pin.path is not None
    assert check_pin(pin).ok
    copy = tmp_path / "labels.json"
    shutil.copyfile(pin.path, copy)
    copy.write_bytes(copy.read_bytes() + b" ")
    bad = check_pin(type(pin)(pin.label, copy, pin.sha256))
    assert not bad.ok and "fails its sha256 pin" in bad.message
    gone = check_pin(type(pin)(pin.label, tmp_path / "absent", pin.sha256))
    assert not gone.ok and "missing" in gone.message


def test_cli_verify_with_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "verify", "smollm2-135m-instruct", "--progress"]) == 0
    captured = capsys.readouterr()
    assert "model smollm2-135m-instruct: ok  sha256 b179c952" in captured.out
    assert "100.0%" in captured.err and "\r" in captured.err
    assert cli.main(["models", "verify", "smollm2-135m-instruct"]) == 0
    assert capsys.readouterr().err == ""  # not a terminal, not asked: no bar


def test_progress_bar_draws_only_when_enabled() -> None:
    import io

    off = io.StringIO()
    bar = ProgressBar(100, "x", off, enabled=False)
    bar.advance(100)
    bar.close()
    assert off.getvalue() == ""
    on = io.StringIO()
    bar = ProgressBar(4 * 2**20, "model", on, enabled=True, min_interval=0)
    bar.advance(2**21)
    bar.advance(2**21)
    bar.close()
    assert " 50.0%" in on.getvalue() and "100.0%" in on.getvalue()
    assert on.getvalue().endswith("\n")
