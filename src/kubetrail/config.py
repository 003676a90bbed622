"""Settings: declared once with their defaults, then file < environment < flags.

The precedence is fixed: built-in defaults, then ``kubetrail.yaml`` (the path given by
``--config``/``KUBETRAIL_CONFIG``, else ``./kubetrail.yaml``, else the XDG config home), then
``KUBETRAIL_*`` environment variables, then command-line flags. The environment is read
here and only here, from a mapping passed in (so tests never touch ``os.environ``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["Settings", "default_data_dir", "load_settings", "settings_schema"]


def default_data_dir(env: Mapping[str, str]) -> Path:
    """The XDG data home (``$XDG_DATA_HOME/kubetrail``, default ``~/.local/share/kubetrail``)."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/share")
    return Path(base) / "kubetrail"


@dataclass(frozen=True)
class Settings:
    """Everything kubetrail can be configured with; see docs/config.md.

    >>> s = load_settings(env={"KUBETRAIL_DATA_DIR": "/tmp/kt"})
    >>> str(s.data_dir)
    '/tmp/kt'
    """

    data_dir: Path = field(default=Path("~/.local/share/kubetrail"),
                           metadata={"help": "where the archive lives"})
    cluster: str = field(default="default",
                         metadata={"help": "cluster name for inputs that do not carry one"})
    batch_events: int = field(default=50_000,
                              metadata={"help": "events buffered before a segment is written"})
    progress: bool = field(default=True, metadata={"help": "show progress bars on a terminal"})
    signing_key: Path | None = field(
        default=None, metadata={"help": "Ed25519 private key (`kubetrail keys generate`) that "
                                "signs the manifest head after every commit; keep it outside "
                                "the data dir", "type": Path})
    alerts: Mapping[str, Any] = field(
        default_factory=dict,
        metadata={"help": "alert sinks, minimum severity and suppression (file only; see "
                          "docs/alerts.md)", "section": True})
    retention: Mapping[str, Any] = field(
        default_factory=dict,
        metadata={"help": "how long and how much to keep: `max_age` (90d), `max_size` (50GB), "
                          "per-cluster `clusters:` overrides (file only; applied by `kubetrail "
                          "retention apply` and hourly by `serve`)", "section": True})
    redaction: Mapping[str, Any] = field(
        default_factory=dict,
        metadata={"help": "redaction of secrets before anything is stored: on by default; "
                          "`enabled`, extra `paths` and `patterns`, `key_file` (file only; see "
                          "docs/redaction.md)", "section": True})
    config_path: Path | None = field(default=None, metadata={"help": "the file that was loaded"})

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_ENV_PREFIX = "KUBETRAIL_"
_FILE_KEYS = {f.name for f in dataclasses.fields(Settings)} - {"config_path"}
# Nested sections are read from the file only and validated by the code that uses them.
_SECTIONS = {f.name for f in dataclasses.fields(Settings) if f.metadata.get("section")}
_SCALAR_KEYS = _FILE_KEYS - _SECTIONS


def _coerce(name: str, value: Any, origin: str) -> Any:
    spec = {f.name: f for f in dataclasses.fields(Settings)}[name]
    target = spec.default if spec.default is not None else spec.metadata["type"]("")
    try:
        if isinstance(target, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if isinstance(target, int):
            number = int(value)
            if number < 0:
                raise ValueError(value)
            return number
        if isinstance(target, Path):
            return Path(os.path.expanduser(str(value)))
        if not isinstance(value, str) or not value:
            raise ValueError(value)
        return value
    except (TypeError, ValueError):
        kind = type(target).__name__.replace("PosixPath", "path")
        raise ConfigError(f"{origin}: {name} must be a {kind}, got {value!r}",
                          hint="fix the value or remove it to use the default") from None


def _config_candidates(env: Mapping[str, str], explicit: Path | None) -> list[Path]:
    if explicit is not None:
        return [explicit]
    if env.get("KUBETRAIL_CONFIG"):
        return [Path(env["KUBETRAIL_CONFIG"])]
    xdg = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return [Path("kubetrail.yaml"), Path(xdg) / "kubetrail" / "kubetrail.yaml"]


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}",
                          hint="check indentation and quoting") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data


def load_settings(
    *,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from defaults, the config file, ``KUBETRAIL_*`` variables and flags."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {"data_dir": default_data_dir(env)}
    loaded: Path | None = None
    candidates = _config_candidates(env, config_path)
    for candidate in candidates:
        if candidate.is_file():
            loaded = candidate
            break
        if candidate is candidates[0] and (config_path or env.get("KUBETRAIL_CONFIG")):
            raise ConfigError(f"config file {candidate} does not exist",
                              hint="create it or drop --config/KUBETRAIL_CONFIG")
    if loaded is not None:
        for key, value in _read_file(loaded).items():
            if key not in _FILE_KEYS:
                raise ConfigError(f"{loaded}: unknown setting {key!r}",
                                  hint="known settings: " + ", ".join(sorted(_FILE_KEYS)))
            if key in _SECTIONS:
                if value is not None and not isinstance(value, dict):
                    raise ConfigError(f"{loaded}: {key} must be a mapping, got {value!r}",
                                      hint=f"write it as an indented `{key}:` block")
                values[key] = value or {}
            else:
                values[key] = _coerce(key, value, str(loaded))
    for key in _SCALAR_KEYS:
        raw = env.get(_ENV_PREFIX + key.upper())
        if raw is not None and raw != "":
            values[key] = _coerce(key, raw, _ENV_PREFIX + key.upper())
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    return Settings(config_path=loaded, **values)


def settings_schema() -> dict[str, Any]:
    """A JSON schema of kubetrail.yaml, generated from :class:`Settings`."""
    kinds = {bool: "boolean", int: "integer", str: "string"}
    props = {}
    for f in dataclasses.fields(Settings):
        if f.name == "config_path":
            continue
        if f.name in _SECTIONS:
            props[f.name] = {"type": "object", "description": f.metadata.get("help", "")}
            continue
        kind = next((v for k, v in kinds.items() if isinstance(f.default, k)), "string")
        if f.default is None:
            kind = ["string", "null"]
        props[f.name] = {"type": kind, "description": f.metadata.get("help", "")}
    return {"type": "object", "additionalProperties": False, "properties": props}
