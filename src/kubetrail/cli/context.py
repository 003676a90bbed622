"""What every command needs: settings resolved once, and the archive they point at."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from ..config import Settings, load_settings
from ..store.archive import Archive


@dataclass
class AppContext:
    """Global options from the command line; settings and archive are built on first use."""

    data_dir: Path | None = None
    config_path: Path | None = None
    progress: bool | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self, **overrides: Any) -> Settings:
        if self._settings is None:
            self._settings = load_settings(
                config_path=self.config_path,
                overrides={"data_dir": self.data_dir, "progress": self.progress},
            )
        return self._settings.replace(**overrides) if overrides else self._settings

    def archive(self, *, create: bool = False) -> Archive:
        settings = self.settings()
        return Archive(settings.data_dir, create=create, signing_key=settings.signing_key,
                       redaction=settings.redaction)

    def show_progress(self) -> bool:
        return self.settings().progress and sys.stderr.isatty()


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    if not isinstance(obj, AppContext):
        obj = AppContext()
        ctx.find_root().obj = obj
    return obj
