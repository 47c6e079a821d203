"""One setting: its declaration (name, type, default, help) and the coercion of a raw value.

Shared by the flat settings table (:mod:`appliance.config`) and the ``[[engines]]`` tables
(:mod:`appliance.config_engines`), so both validate, and are documented, the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    flag: bool = True  # exposed as a `serve` flag
    minimum: float | None = None
    flag_name: str = ""  # default: --name-with-dashes
    choices: tuple[str, ...] = ()  # the allowed values of a str setting

    @property
    def option(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")


def _strings(value: Any) -> tuple[str, ...]:
    """A list of strings, or one comma-separated string (environment, flags)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise ValueError("expected a list of strings")


def coerce(setting: Setting, value: Any, origin: str) -> Any:
    """``value`` as the setting's type, checked against its minimum and choices."""
    try:
        if setting.type is bool:
            if isinstance(value, str):
                out: Any = value.strip().lower() in {"1", "true", "yes", "on"}
            else:
                out = bool(value)
        elif setting.type is Path:
            out = Path(str(value)).expanduser()
        elif setting.type is int:
            if isinstance(value, bool):
                raise ValueError("a boolean is not an integer")
            out = int(value)
        elif setting.type is tuple:
            out = _strings(value)
        else:
            out = setting.type(value)
    except (TypeError, ValueError) as exc:
        expected = "a list of strings" if setting.type is tuple else setting.type.__name__
        raise ConfigError(
            f"{origin}: setting {setting.name!r} expects {expected}, got {value!r}"
        ) from exc
    if setting.minimum is not None and out < setting.minimum:
        raise ConfigError(f"{origin}: setting {setting.name!r} must be >= {setting.minimum}")
    if setting.choices and out not in setting.choices:
        raise ConfigError(f"{origin}: setting {setting.name!r} must be one of "
                          f"{', '.join(setting.choices)}; got {value!r}")
    return out
