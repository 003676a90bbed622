"""`kubetrail verify` and `kubetrail keys`: proving the archive is untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from .context import app_context
from .output import console, err_console

keys_app = typer.Typer(help="Signing keys for the manifest (tamper evidence).",
                       no_args_is_help=True)
retention_app = typer.Typer(help="Removing old segments, on the record.", no_args_is_help=True)

_DEFAULT_KEY = Path("~/.config/kubetrail/signing.key")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(retention_app, name="retention")

    @app.command("access-log")
    def access_log_cmd(
        ctx: typer.Context,
        who: Annotated[str | None, typer.Option("--who", help="Only this user or token "
                                                "(glob).", show_default=False)] = None,
        since: Annotated[str | None, typer.Option("--since", help="24h, 7d or an RFC 3339 "
                                                  "time.", show_default=False)] = None,
        output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    ) -> None:
        """Who looked at the audit log: every query, hunt and report, with its filter and
        how many rows it returned (a hash chain `kubetrail verify` checks)."""
        from fnmatch import fnmatchcase

        from ..query.filters import parse_when
        from ..store.access import read_access
        from .output import render_rows

        entries = read_access(app_context(ctx).archive())
        if who:
            entries = [e for e in entries if fnmatchcase(str(e.get("who")), who)]
        if since:
            start = parse_when(since).isoformat()
            entries = [e for e in entries if str(e.get("at")) >= start]
        rows = [{"at": e["at"], "who": e["who"], "action": e["action"],
                 "what": orjson.dumps(e.get("what") or {}).decode(), "rows": e.get("rows")}
                for e in entries]
        render_rows(rows if output == "table" else entries, output, title="access log")

    @retention_app.command("apply")
    def retention_apply(
        ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Only list what would be removed.")] = False,
        output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    ) -> None:
        """Remove segments older than `max_age` or beyond `max_size` (the `retention:`
        settings, globally and per cluster); each removal is recorded in the manifest, so
        `kubetrail verify` does not call it tampering."""
        from datetime import UTC, datetime

        from ..errors import ConfigError
        from ..store.retention import RetentionPolicy, apply_retention

        app_ctx = app_context(ctx)
        policy = RetentionPolicy.from_mapping(app_ctx.settings().retention)
        if policy.empty:
            raise ConfigError("no retention is configured",
                              hint="add a `retention:` section (max_age, max_size, clusters) "
                              "to kubetrail.yaml")
        removals = apply_retention(app_ctx.archive(), policy, datetime.now(UTC),
                                   dry_run=dry_run)
        if output == "json":
            for r in removals:
                console.file.write(orjson.dumps(r.to_dict()).decode() + "\n")
            return
        verb = "would remove" if dry_run else "removed"
        for r in removals:
            console.print(f"{verb} {r.segment.name} ({r.cluster}, {r.rows:,} rows, "
                          f"{r.bytes / 1e6:,.1f} MB, up to {r.max_time}): {r.reason}",
                          markup=False, highlight=False)
        console.print(f"{verb} {len(removals)} segment(s), "
                      f"{sum(r.rows for r in removals):,} rows, "
                      f"{sum(r.bytes for r in removals) / 1e6:,.1f} MB",
                      markup=False, highlight=False)

    @app.command("verify")
    def verify_cmd(
        ctx: typer.Context,
        public_key: Annotated[Path | None, typer.Option(
            "--public-key", help="The signing key's public half (a trusted copy; default: "
            "<data-dir>/keys/signing.pub, then the .pub beside signing_key).",
            show_default=False)] = None,
        head: Annotated[bool, typer.Option(
            "--head", help="Print only the manifest head (sequence and hash), for anchoring "
            "outside kubetrail.")] = False,
        output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    ) -> None:
        """Check every segment against the manifest, the manifest's hash chain, and its
        signatures; say exactly what is wrong.

        Exit 0 when everything holds, 4 when something was tampered with (or damaged), 1 when
        the check itself could not run.
        """
        from ..store.evidence import load_public_key, verify_archive

        app_ctx = app_context(ctx)
        settings = app_ctx.settings()
        archive = app_ctx.archive()
        if head:
            seq, digest = archive.manifest_head()
            console.print(f"{seq} {digest}", markup=False, highlight=False)
            return
        candidates = [public_key] if public_key else [
            archive.root / "keys" / "signing.pub",
            *([settings.signing_key.expanduser().with_suffix(".pub")]
              if settings.signing_key else [])]
        key_path = next((p for p in candidates if p is not None and p.exists()), None)
        if public_key is not None and key_path is None:
            from ..errors import ConfigError

            raise ConfigError(f"no such public key: {public_key}")
        key = load_public_key(key_path) if key_path else None
        from ..store.access import verify_access

        result = verify_archive(archive.root, archive.segment_files(), key)
        result.problems.extend(verify_access(archive))
        if output == "json":
            console.file.write(orjson.dumps(result.to_dict()).decode() + "\n")
        else:
            for problem in result.problems:
                err_console.print(f"[red]{problem.kind}[/red]: {problem.message}")
            state = "intact" if result.ok else f"{len(result.problems)} problem(s)"
            console.print(f"{result.segments:,} segments, {result.rows:,} rows, "
                          f"{result.deleted:,} removed by retention; manifest head "
                          f"{result.head_seq} {result.head_hash or '(empty)'}: {state}",
                          markup=False, highlight=False)
            if result.signed_seq is not None:
                console.print(f"signed up to entry {result.signed_seq} at {result.signed_at} "
                              f"by key {result.key_id}", markup=False, highlight=False)
            elif key is None:
                console.print("not signed (set signing_key, see `kubetrail keys generate`)")
            if key_path is not None and key_path.is_relative_to(archive.root):
                err_console.print("[yellow]note: the public key was read from the data dir; "
                                  "pass --public-key with a copy kept elsewhere to prove "
                                  "origin, not only consistency[/yellow]")
        if not result.ok:
            raise typer.Exit(4)

    @keys_app.command("generate")
    def keys_generate(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option(
            "--out", help="Where to write the private key (0600); the public key goes beside "
            "it as .pub and into the data dir.")] = _DEFAULT_KEY,
        force: Annotated[bool, typer.Option("--force", help="Replace existing keys.")] = False,
    ) -> None:
        """Create the Ed25519 key that signs the manifest head after every commit."""
        from ..store.archive import ensure_dir
        from ..store.evidence import generate_keys

        private = out.expanduser()
        public, kid = generate_keys(private, force=force)
        archive = app_context(ctx).archive(create=True)
        ensure_dir(archive.root / "keys")
        (archive.root / "keys" / "signing.pub").write_bytes(public.read_bytes())
        console.print(f"key {kid}: private {private} (0600), public {public}",
                      markup=False, highlight=False)
        console.print(f"sign with it: `signing_key: {private}` in kubetrail.yaml, or "
                      f"KUBETRAIL_SIGNING_KEY={private}", markup=False, highlight=False)
