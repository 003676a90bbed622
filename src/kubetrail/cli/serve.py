"""`kubetrail serve`: the audit webhook and query API (FastAPI on uvicorn)."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from ..errors import ConfigError
from .context import app_context
from .output import err_console


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """SIGTERM/SIGINT end the service with exit 0 once it has flushed (uvicorn would
        raise the signal again after its graceful shutdown, and the exit code would say
        the process was killed)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return Server


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        ctx: typer.Context,
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8443,
        tls_cert: Annotated[Path | None, typer.Option(
            "--tls-cert", help="Server certificate (PEM); with --tls-key, serve HTTPS.",
            show_default=False)] = None,
        tls_key: Annotated[Path | None, typer.Option(
            "--tls-key", help="Server private key (PEM).", show_default=False)] = None,
        client_ca: Annotated[Path | None, typer.Option(
            "--client-ca", help="CA bundle (PEM): clients must present a certificate it "
            "signed (mutual TLS).", show_default=False)] = None,
        tokens_file: Annotated[Path | None, typer.Option(
            "--tokens-file", help="Write tokens for the webhook: one a line, optionally "
            "followed by a space and the clusters it may write (comma-separated).",
            show_default=False)] = None,
        read_tokens_file: Annotated[Path | None, typer.Option(
            "--read-tokens-file", help="Tokens for /v1/events, /v1/alerts and /v1/stats "
            "(same format; clusters are ignored).", show_default=False)] = None,
        no_auth: Annotated[bool, typer.Option(
            "--no-auth", help="Accept unauthenticated requests (only on a loopback "
            "address).")] = False,
        max_body: Annotated[int, typer.Option(
            "--max-body", help="Largest request body in bytes (413 above).")] = 64 * 1024 * 1024,
        queue_bytes: Annotated[int, typer.Option(
            "--queue-bytes", help="Bytes accepted but not yet durable before 429 "
            "(Retry-After).")] = 256 * 1024 * 1024,
        detect: Annotated[bool, typer.Option(
            "--detect/--no-detect", help="Run the detection rules on arriving events.")] = True,
        rules: Annotated[list[Path] | None, typer.Option(
            "--rules", help="Extra rule files or directories (repeatable).",
            show_default=False)] = None,
    ) -> None:
        """Receive audit events from API servers (webhook) and answer queries over HTTP.

        Point kube-apiserver at it with the kubeconfig `kubetrail policy flags --webhook-url`
        writes. A batch is acknowledged once it is durable in the write-ahead log; events
        reach Parquet segments within about a second, and the CLI can query the same data
        dir meanwhile.
        """
        import uvicorn

        from ..service.app import ServiceConfig, create_app
        from ..service.auth import load_tokens
        from ..service.runtime import RuntimeOptions
        from ..store.retention import RetentionPolicy

        settings = app_context(ctx).settings()
        RetentionPolicy.from_mapping(settings.retention)  # a mistake stops it before it starts
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together",
                              hint="give both to serve HTTPS, or neither")
        if client_ca is not None and tls_cert is None:
            raise ConfigError("--client-ca needs --tls-cert and --tls-key",
                              hint="mutual TLS is part of HTTPS")
        if tokens_file is None and client_ca is None and not no_auth:
            raise ConfigError("no authentication for the webhook",
                              hint="give --tokens-file and/or --client-ca (or --no-auth on a "
                              "loopback address, for trying it out)")
        if no_auth and not _loopback(host):
            raise ConfigError(f"--no-auth is only allowed on a loopback address, not {host}",
                              hint="use --tokens-file or --client-ca")
        config = ServiceConfig(
            data_dir=str(settings.data_dir), cluster=settings.cluster,
            write_tokens=load_tokens(tokens_file) if tokens_file else None,
            read_tokens=load_tokens(read_tokens_file) if read_tokens_file else None,
            open_writes=tokens_file is None,  # then mTLS (or --no-auth) authenticates
            open_reads=no_auth and read_tokens_file is None,
            max_body_bytes=max_body, signing_key=settings.signing_key,
            redaction=dict(settings.redaction),
            runtime=RuntimeOptions(queue_bytes=queue_bytes, detect=detect,
                                   rules=[str(p) for p in rules or ()],
                                   alerts=dict(settings.alerts),
                                   retention=dict(settings.retention)))
        for path in (tls_cert, tls_key, client_ca):
            if path is not None and not path.is_file():
                raise ConfigError(f"no such file: {path}")
        scheme = "https" if tls_cert else "http"
        err_console.print(f"kubetrail serving on {scheme}://{host}:{port} "
                          f"(data dir {settings.data_dir})")
        server = _server_class()(uvicorn.Config(
            create_app(config), host=host, port=port, log_level="warning",
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            ssl_ca_certs=str(client_ca) if client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
            timeout_graceful_shutdown=30, lifespan="on"))
        server.run()
        if not server.started:
            raise typer.Exit(1)
