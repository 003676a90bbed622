"""kube-apiserver audit flags, static-pod mounts and the webhook kubeconfig for a policy.

Turning "audit with this policy, to this file and/or ``kubetrail serve``" into a running
API server takes three artefacts that must agree with each other: the ``--audit-*``
arguments, the hostPath volumes and mounts of the static pod (the API server runs in a
container and sees nothing of the node unless mounted), and a kubeconfig-format file that
tells the webhook backend where to POST and how to authenticate. They are built here from
one :class:`FlagOptions`, following shared/reference/k8s-audit-semantics.md §7-9, including
the rotation defaults that changed in Kubernetes 1.36. Only flags the user asked for are
emitted: everything else keeps the API server's own default.
"""

from __future__ import annotations

import base64
import re
import textwrap
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..errors import ConfigError

__all__ = ["ApiServerConfig", "FlagOptions", "apiserver_config", "render"]

#: The modes shared by both backends (§8), with what a user choosing one must know about it.
#: ``None`` means nothing worth a warning. Keyed by mode, then backend.
_MODES: dict[str, dict[str, str | None]] = {
    "batch": {
        "log": "--audit-log-mode=batch drops events (and only counts them) when its buffer is full",
        "webhook": None,  # the webhook default
    },
    "blocking": {
        "log": None,  # the log default
        "webhook": "--audit-webhook-mode=blocking POSTs every event inside the request path, "
                   "retries included: a slow or unreachable kubetrail serve slows every API request",
    },
    "blocking-strict": {
        "log": "--audit-log-mode=blocking-strict rejects a request with HTTP 500 when its "
               "RequestReceived event cannot be written",
        "webhook": "--audit-webhook-mode=blocking-strict rejects API requests with HTTP 500 whenever "
                   "kubetrail serve cannot take their RequestReceived event: an outage of the "
                   "receiver stops the cluster",
    },
}

#: Go's time.ParseDuration syntax without a sign (a negative backoff makes no sense).
_GO_DURATION = re.compile(r"0|(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")

_CONTAINER = "kube-apiserver"
_POLICY_VOLUME = "kubetrail-audit-policy"
_LOG_VOLUME = "kubetrail-audit-logs"
_WEBHOOK_VOLUME = "kubetrail-audit-webhook"
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class FlagOptions:
    """What the user wants audited where; ``None`` leaves the API server's default in place.

    Paths are paths on the control-plane node; they are mounted at the same path in the
    API server's container.

    >>> options = FlagOptions("/etc/kubernetes/audit/policy.yaml",
    ...                       log_path="/var/log/kubernetes/audit/audit.log", maxage=30)
    >>> apiserver_config(options).args[1:]
    ('--audit-log-path=/var/log/kubernetes/audit/audit.log', '--audit-log-maxage=30')
    """

    policy_file: str
    log_path: str | None = None  # "-" = the API server's stdout
    maxage: int | None = None  # days; default 366 since 1.36 (0 = keep forever before)
    maxbackup: int | None = None  # default 100 since 1.36 (0 = unlimited before)
    maxsize: int | None = None  # MB; default 100; 0 disables rotation since 1.36
    compress: bool = False
    log_mode: str | None = None
    webhook_url: str | None = None
    webhook_ca: str | None = None  # local CA bundle file, embedded as certificate-authority-data
    webhook_token_file: str | None = None  # local file holding a bearer token, embedded
    webhook_client_cert: str | None = None  # local PEM files for mutual TLS, embedded
    webhook_client_key: str | None = None
    webhook_insecure: bool = False
    webhook_config_path: str = "/etc/kubernetes/audit/webhook.kubeconfig"
    webhook_mode: str | None = None
    webhook_initial_backoff: str | None = None  # Go duration, e.g. "10s"
    truncate: bool = False


@dataclass(frozen=True)
class ApiServerConfig:
    """The three artefacts, consistent with each other, plus what the user should know.

    ``manifest_patch`` is shaped like a strategic-merge patch of the kube-apiserver static
    pod, but its ``command`` entries are *additions*: ``command`` has no merge key, so a
    real strategic merge would replace the whole list. Append them by hand (``render``
    says so); volumes and volumeMounts merge by name and mountPath as usual.

    >>> config = apiserver_config(FlagOptions("/etc/kubernetes/audit/policy.yaml", log_path="-"))
    >>> config.args
    ('--audit-policy-file=/etc/kubernetes/audit/policy.yaml', '--audit-log-path=-')
    >>> config.webhook_kubeconfig is None
    True
    """

    args: tuple[str, ...]
    manifest_patch: dict[str, Any]
    webhook_kubeconfig: dict[str, Any] | None
    warnings: tuple[str, ...]


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _node_path(value: str, field: str) -> PurePosixPath:
    """A path that can be a hostPath and a mountPath: absolute, normalised, one line."""
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts or any(ord(c) < 32 for c in value):
        raise ConfigError(f"{_flag(field)} {value!r} is not an absolute path on the node",
                          hint="hostPath volumes need an absolute path without '..', e.g. /var/log/x")
    return path


def _given(o: FlagOptions, names: tuple[str, ...]) -> list[str]:
    """The flags among ``names`` that were set (0 counts as set, False does not)."""
    return [_flag(n) for n in names if getattr(o, n) is not None and getattr(o, n) is not False]


def _read(path: str, field: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{_flag(field)} {path}: {e.strerror or e}",
                          hint="this file is read here and embedded in the webhook kubeconfig") from None


def _check_mode(mode: str | None, field: str) -> None:
    if mode is not None and mode not in _MODES:
        raise ConfigError(f"{_flag(field)} {mode!r} is not an audit mode",
                          hint="allowed modes: " + ", ".join(_MODES))


def _check_common(o: FlagOptions) -> None:
    if o.log_path is None and o.webhook_url is None:
        raise ConfigError("no audit backend: the API server would evaluate the policy but no events "
                          "would be written anywhere",
                          hint="pass --log-path (a file, or - for stdout) and/or --webhook-url")
    for name in ("maxage", "maxbackup", "maxsize"):
        value = getattr(o, name)
        if value is not None and value < 0:
            raise ConfigError(f"{_flag(name)} {value} is negative: kube-apiserver refuses to start",
                              hint="use 0 for no limit, or leave it out for the default")
    rotation = _given(o, ("maxage", "maxbackup", "maxsize", "compress"))
    if rotation and o.log_path in (None, "-"):
        raise ConfigError(f"{', '.join(rotation)}: no log file to rotate",
                          hint="give --log-path a file path, or drop the rotation options")
    if o.log_mode is not None and o.log_path is None:
        raise ConfigError("--log-mode: no log backend to configure", hint="add --log-path")
    _check_mode(o.log_mode, "log_mode")
    _check_mode(o.webhook_mode, "webhook_mode")
    if o.webhook_url is None:
        given = _given(o, ("webhook_ca", "webhook_token_file", "webhook_client_cert",
                           "webhook_client_key", "webhook_insecure", "webhook_mode",
                           "webhook_initial_backoff"))
        if given:
            raise ConfigError(f"{', '.join(given)}: no webhook to configure", hint="add --webhook-url")
    backoff = o.webhook_initial_backoff
    if backoff is not None and not _GO_DURATION.fullmatch(backoff):
        raise ConfigError(f"--webhook-initial-backoff {backoff!r} is not a Go duration",
                          hint="use a positive duration such as 10s, 500ms or 1m30s")


def _log_args(o: FlagOptions, warnings: list[str]) -> list[str]:
    if o.log_path is None:
        return []
    args = [f"--audit-log-path={o.log_path}"]
    if o.log_path == "-":
        warnings.append("--audit-log-path=- writes events to the API server's stdout (its container "
                        "log), not to a file: nothing is rotated and no log directory is mounted")
    for name in ("maxage", "maxbackup", "maxsize"):
        if getattr(o, name) is not None:
            args.append(f"--audit-log-{name}={getattr(o, name)}")
    if o.maxsize == 0:
        warnings.append("--audit-log-maxsize=0 disables rotation since Kubernetes 1.36: the log grows "
                        "without limit (before 1.36, 0 meant rotate at 100 MB)")
    if o.log_path != "-" and o.maxage is None and o.maxbackup is None:
        warnings.append("before Kubernetes 1.36 rotated logs were kept forever by default; on older "
                        "clusters pass --maxage and --maxbackup to bound disk use")
    if o.compress:
        args.append("--audit-log-compress=true")
    if o.log_mode is not None:
        args.append(f"--audit-log-mode={o.log_mode}")
        if note := _MODES[o.log_mode]["log"]:
            warnings.append(note)
    if o.truncate:
        args.append("--audit-log-truncate-enabled=true")
    return args


def _webhook(o: FlagOptions, warnings: list[str]) -> tuple[list[str], dict[str, Any] | None]:
    url = o.webhook_url
    if url is None:
        return [], None
    parts = urlsplit(url)
    try:
        host = parts.hostname if parts.port is None or parts.port > 0 else None
    except ValueError:  # a port that is not a number in range
        host = None
    if parts.scheme not in ("http", "https") or not host or any(ord(c) < 33 for c in url):
        raise ConfigError(f"--webhook-url {url!r} is not an http(s) URL with a host",
                          hint="e.g. https://kubetrail.example:8443/audit")
    if parts.scheme == "http":
        warnings.append("--webhook-url is http://: audit events (which can hold secrets) and the bearer "
                        "token travel in clear text; serve kubetrail over https")
    if parts.query:
        warnings.append(f"--webhook-url has a query string ({parts.query}): client-go does not "
                        "preserve it, kubetrail serve will not see it")
    cluster: dict[str, Any] = {"server": url}
    if o.webhook_ca is not None and o.webhook_insecure:
        raise ConfigError("--webhook-ca and --webhook-insecure contradict each other",
                          hint="client-go refuses a CA together with insecure-skip-tls-verify")
    if o.webhook_ca is not None:
        ca = _read(o.webhook_ca, "webhook_ca")
        if _PEM_CERT not in ca:
            raise ConfigError(f"--webhook-ca {o.webhook_ca}: no PEM certificate in the file",
                              hint="give the CA bundle that signed kubetrail serve's certificate")
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode("ascii")
    if o.webhook_insecure:
        cluster["insecure-skip-tls-verify"] = True
        warnings.append("INSECURE: --webhook-insecure skips TLS verification: the API server sends "
                        "every audit event, and the bearer token, to whoever answers at "
                        f"{host}; pass --webhook-ca instead")
    user: dict[str, Any] = {}
    if o.webhook_token_file is not None:
        token = _read(o.webhook_token_file, "webhook_token_file").decode("utf-8", "replace").strip()
        if not token or any(c.isspace() for c in token):
            raise ConfigError(f"--webhook-token-file {o.webhook_token_file}: expected one bearer token",
                              hint="the file should hold the token alone, on one line")
        user["token"] = token
    if (o.webhook_client_cert is None) != (o.webhook_client_key is None):
        raise ConfigError("--webhook-client-cert and --webhook-client-key go together",
                          hint="give both for mutual TLS (kubetrail serve --client-ca), or neither")
    if o.webhook_client_cert is not None and o.webhook_client_key is not None:
        cert = _read(o.webhook_client_cert, "webhook_client_cert")
        key = _read(o.webhook_client_key, "webhook_client_key")
        if _PEM_CERT not in cert:
            raise ConfigError(f"--webhook-client-cert {o.webhook_client_cert}: no PEM certificate "
                              "in the file", hint="give the certificate the API server presents")
        if b"PRIVATE KEY-----" not in key:
            raise ConfigError(f"--webhook-client-key {o.webhook_client_key}: no PEM private key "
                              "in the file", hint="give the key of --webhook-client-cert")
        user["client-certificate-data"] = base64.b64encode(cert).decode("ascii")
        user["client-key-data"] = base64.b64encode(key).decode("ascii")
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubetrail", "cluster": cluster}],
        "users": [{"name": "kube-apiserver-audit", "user": user}],
        "contexts": [{"name": "kubetrail",
                      "context": {"cluster": "kubetrail", "user": "kube-apiserver-audit"}}],
        "current-context": "kubetrail",
    }
    args = [f"--audit-webhook-config-file={o.webhook_config_path}"]
    if o.webhook_mode is not None:
        args.append(f"--audit-webhook-mode={o.webhook_mode}")
        if note := _MODES[o.webhook_mode]["webhook"]:
            warnings.append(note)
    if o.webhook_initial_backoff is not None:
        args.append(f"--audit-webhook-initial-backoff={o.webhook_initial_backoff}")
    if o.truncate:
        args.append("--audit-webhook-truncate-enabled=true")
    return args, kubeconfig


def _manifest_patch(o: FlagOptions, args: list[str]) -> dict[str, Any]:
    """hostPath volumes and mounts, mounted at the same path as on the node."""
    mounts: list[tuple[str, PurePosixPath, str, bool]] = [
        (_POLICY_VOLUME, _node_path(o.policy_file, "policy_file"), "File", True)]
    if o.log_path not in (None, "-"):
        log = _node_path(o.log_path, "log_path")
        if o.log_path.endswith("/") or log.parent == PurePosixPath("/"):
            raise ConfigError(f"--log-path {o.log_path}: give a file inside a dedicated directory",
                              hint="e.g. /var/log/kubernetes/audit/audit.log; its directory is mounted")
        mounts.append((_LOG_VOLUME, log.parent, "DirectoryOrCreate", False))
    if o.webhook_url is not None:
        mounts.append((_WEBHOOK_VOLUME, _node_path(o.webhook_config_path, "webhook_config_path"),
                       "File", True))
    paths = [str(path) for _, path, _, _ in mounts]
    if len(set(paths)) != len(paths):
        raise ConfigError(f"two audit files share a path: {', '.join(paths)}",
                          hint="the policy, the webhook kubeconfig and the log directory need distinct paths")
    return {"spec": {
        "containers": [{
            "name": _CONTAINER,
            "command": list(args),
            "volumeMounts": [{"name": name, "mountPath": str(path), "readOnly": ro}
                             for name, path, _, ro in mounts],
        }],
        "volumes": [{"name": name, "hostPath": {"path": str(path), "type": kind}}
                    for name, path, kind, _ in mounts],
    }}


def apiserver_config(options: FlagOptions) -> ApiServerConfig:
    """Validate ``options`` and build the arguments, mounts and webhook kubeconfig.

    Reads only the CA and token files, whose contents the kubeconfig embeds. Raises
    :class:`~kubetrail.errors.ConfigError` for anything kube-apiserver would refuse or that
    would silently do nothing.
    """
    _check_common(options)
    warnings: list[str] = []
    args = [f"--audit-policy-file={options.policy_file}", *_log_args(options, warnings)]
    webhook_args, kubeconfig = _webhook(options, warnings)
    args += webhook_args
    patch = _manifest_patch(options, args)
    return ApiServerConfig(tuple(args), patch, kubeconfig, tuple(warnings))


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=1 << 20, allow_unicode=True).rstrip("\n")


def _comment(text: str) -> str:
    return "\n".join(textwrap.wrap(text, 100, initial_indent="# ", subsequent_indent="#   "))


def render(config: ApiServerConfig) -> str:
    """Human text ready to paste: warnings, then args, manifest patch and kubeconfig.

    Sections are separated by one blank line and start with ``#`` comment lines, so each
    YAML section loads as it stands.
    """
    sections = ["\n".join(_comment(f"WARNING: {w}") for w in config.warnings)] if config.warnings else []
    sections.append("# kube-apiserver arguments, one per line:\n" + "\n".join(config.args))
    sections.append(
        _comment("Patch for the kube-apiserver static pod (/etc/kubernetes/manifests/kube-apiserver.yaml "
                 "on every control-plane node): merge volumes and volumeMounts, and APPEND the command "
                 "entries to the existing command. Do not apply it as a strategic merge patch as-is: "
                 "that would replace the whole command list.")
        + "\n" + _yaml(config.manifest_patch))
    if config.webhook_kubeconfig is not None:
        flag = "--audit-webhook-config-file="
        where = next((a[len(flag):] for a in config.args if a.startswith(flag)), "the configured path")
        has_token = any(u.get("user", {}).get("token") or u.get("user", {}).get("client-key-data")
                        for u in config.webhook_kubeconfig.get("users", []))
        secret = ("It contains a credential (a bearer token or a private key): create it with mode "
                  "0600, owned by root." if has_token else "Create it with mode 0600, owned by root.")
        sections.append(_comment(f"Webhook kubeconfig: save as {where} on every control-plane node. {secret}")
                        + "\n" + _yaml(config.webhook_kubeconfig))
    return "\n\n".join(sections) + "\n"
