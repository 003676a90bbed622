"""kube-apiserver audit flags, static-pod patch and webhook kubeconfig (reference §7-9)."""

from __future__ import annotations

import base64
import dataclasses
import doctest
from pathlib import Path
from typing import Any

import pytest
import yaml

import kubetrail.policy.flags as flags_module
from kubetrail.errors import ConfigError
from kubetrail.policy.flags import ApiServerConfig, FlagOptions, apiserver_config, render

POLICY = "/etc/kubernetes/audit/policy.yaml"
LOG = "/var/log/kubernetes/audit/audit.log"
URL = "https://kubetrail.example:8443/audit"
PEM = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ0E=\n-----END CERTIFICATE-----\n"


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(PEM)
    return path


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("  kt-0123456789abcdef\n")
    return path


def _webhook(ca: Path, token: Path, **changes: Any) -> FlagOptions:
    options = FlagOptions(POLICY, webhook_url=URL, webhook_ca=str(ca), webhook_token_file=str(token))
    return dataclasses.replace(options, **changes)


def _container(config: ApiServerConfig) -> dict[str, Any]:
    (container,) = config.manifest_patch["spec"]["containers"]
    return container


def _sections(text: str) -> list[str]:
    """The rendered sections with their comment headers removed."""
    parts = [p for p in text.split("\n\n") if p.strip()]
    return ["\n".join(line for line in p.splitlines() if not line.startswith("#")) for p in parts]


def test_log_only_with_all_rotation_flags() -> None:
    config = apiserver_config(FlagOptions(POLICY, log_path=LOG, maxage=30, maxbackup=10, maxsize=200,
                                          compress=True, log_mode="blocking", truncate=True))
    assert config.args == (
        f"--audit-policy-file={POLICY}",
        f"--audit-log-path={LOG}",
        "--audit-log-maxage=30",
        "--audit-log-maxbackup=10",
        "--audit-log-maxsize=200",
        "--audit-log-compress=true",
        "--audit-log-mode=blocking",
        "--audit-log-truncate-enabled=true",
    )
    assert config.webhook_kubeconfig is None
    assert config.warnings == ()
    assert _container(config)["command"] == list(config.args)


def test_only_requested_flags_are_emitted() -> None:
    config = apiserver_config(FlagOptions(POLICY, log_path=LOG))
    assert config.args == (f"--audit-policy-file={POLICY}", f"--audit-log-path={LOG}")
    assert any("before Kubernetes 1.36" in w for w in config.warnings)


def test_maxsize_zero_warns_that_rotation_is_off() -> None:
    config = apiserver_config(FlagOptions(POLICY, log_path=LOG, maxage=7, maxbackup=3, maxsize=0))
    assert "--audit-log-maxsize=0" in config.args
    (warning,) = config.warnings
    assert "1.36" in warning and "disables rotation" in warning


def test_stdout_log_warns_and_mounts_no_directory() -> None:
    config = apiserver_config(FlagOptions(POLICY, log_path="-"))
    assert config.args[-1] == "--audit-log-path=-"
    assert any("stdout" in w for w in config.warnings)
    names = [v["name"] for v in config.manifest_patch["spec"]["volumes"]]
    assert names == ["kubetrail-audit-policy"]


def test_webhook_with_ca_and_token(ca: Path, token: Path) -> None:
    config = apiserver_config(_webhook(ca, token, webhook_mode="batch", webhook_initial_backoff="1m30s",
                                       truncate=True))
    assert config.args == (
        f"--audit-policy-file={POLICY}",
        "--audit-webhook-config-file=/etc/kubernetes/audit/webhook.kubeconfig",
        "--audit-webhook-mode=batch",
        "--audit-webhook-initial-backoff=1m30s",
        "--audit-webhook-truncate-enabled=true",
    )
    assert config.warnings == ()
    kubeconfig = config.webhook_kubeconfig
    assert kubeconfig is not None
    assert (kubeconfig["apiVersion"], kubeconfig["kind"]) == ("v1", "Config")
    (cluster,), (user,), (context,) = kubeconfig["clusters"], kubeconfig["users"], kubeconfig["contexts"]
    assert cluster["cluster"] == {"server": URL,
                                  "certificate-authority-data": base64.b64encode(PEM).decode()}
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == PEM
    assert user["user"] == {"token": "kt-0123456789abcdef"}
    assert context["context"] == {"cluster": cluster["name"], "user": user["name"]}
    assert kubeconfig["current-context"] == context["name"]


def test_webhook_config_path_is_followed(ca: Path, token: Path) -> None:
    config = apiserver_config(_webhook(ca, token, webhook_config_path="/etc/kt/hook.yaml"))
    assert "--audit-webhook-config-file=/etc/kt/hook.yaml" in config.args
    mounts = {m["name"]: m for m in _container(config)["volumeMounts"]}
    assert mounts["kubetrail-audit-webhook"] == {"name": "kubetrail-audit-webhook",
                                                 "mountPath": "/etc/kt/hook.yaml", "readOnly": True}


def test_insecure_and_http_warn(token: Path) -> None:
    config = apiserver_config(FlagOptions(POLICY, webhook_url="http://kt.internal/audit?team=a",
                                          webhook_token_file=str(token), webhook_insecure=True,
                                          webhook_mode="blocking-strict"))
    assert config.webhook_kubeconfig is not None
    cluster = config.webhook_kubeconfig["clusters"][0]["cluster"]
    assert cluster == {"server": "http://kt.internal/audit?team=a", "insecure-skip-tls-verify": True}
    text = "\n".join(config.warnings)
    assert "INSECURE" in text and "kt.internal" in text
    assert "http://" in text and "clear text" in text
    assert "query string" in text and "client-go does not preserve" in text
    assert "HTTP 500" in text


@pytest.mark.parametrize(("options", "message"), [
    (FlagOptions(POLICY), "no events would be written"),
    (FlagOptions(POLICY, log_path=LOG, maxage=-1), "--maxage -1 is negative"),
    (FlagOptions(POLICY, log_path=LOG, maxbackup=-2), "--maxbackup -2 is negative"),
    (FlagOptions(POLICY, log_path=LOG, maxsize=-3), "--maxsize -3 is negative"),
    (FlagOptions(POLICY, log_path="-", maxage=0), "--maxage: no log file to rotate"),
    (FlagOptions(POLICY, webhook_url=URL, compress=True), "--compress: no log file to rotate"),
    (FlagOptions(POLICY, webhook_url=URL, log_mode="batch"), "--log-mode: no log backend"),
    (FlagOptions(POLICY, log_path=LOG, log_mode="async"), "--log-mode 'async' is not an audit mode"),
    (FlagOptions(POLICY, webhook_url=URL, webhook_mode="Batch"), "--webhook-mode 'Batch' is not"),
    (FlagOptions(POLICY, log_path=LOG, webhook_insecure=True), "--webhook-insecure: no webhook to configure"),
    (FlagOptions(POLICY, webhook_url=URL, webhook_initial_backoff="10"), "'10' is not a Go duration"),
    (FlagOptions(POLICY, webhook_url=URL, webhook_initial_backoff="-5s"), "'-5s' is not a Go duration"),
    (FlagOptions(POLICY, webhook_url="ftp://kt.example/audit"), "is not an http(s) URL with a host"),
    (FlagOptions(POLICY, webhook_url="https:///audit"), "is not an http(s) URL with a host"),
    (FlagOptions(POLICY, webhook_url="https://kt.example:99999/"), "is not an http(s) URL with a host"),
    (FlagOptions("policy.yaml", log_path=LOG), "--policy-file 'policy.yaml' is not an absolute path"),
    (FlagOptions(POLICY, log_path="audit.log"), "--log-path 'audit.log' is not an absolute path"),
    (FlagOptions(POLICY, log_path="/audit.log"), "give a file inside a dedicated directory"),
    (FlagOptions(POLICY, webhook_url=URL, webhook_config_path=POLICY), "two audit files share a path"),
])
def test_config_errors(options: FlagOptions, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apiserver_config(options)
    assert message in info.value.message


def test_no_backend_hint_names_both_flags() -> None:
    with pytest.raises(ConfigError) as info:
        apiserver_config(FlagOptions(POLICY))
    assert info.value.hint is not None
    assert "--log-path" in info.value.hint and "--webhook-url" in info.value.hint


def test_unknown_mode_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        apiserver_config(FlagOptions(POLICY, log_path=LOG, log_mode="async"))
    assert info.value.hint == "allowed modes: batch, blocking, blocking-strict"


@pytest.mark.parametrize("backoff", ["10s", "1m30s", "500ms", "1.5h", "0"])
def test_go_durations_are_accepted(backoff: str) -> None:
    config = apiserver_config(FlagOptions(POLICY, webhook_url=URL, webhook_initial_backoff=backoff))
    assert f"--audit-webhook-initial-backoff={backoff}" in config.args


def test_missing_files_name_their_path(tmp_path: Path, ca: Path, token: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    for options in (_webhook(ca, token, webhook_ca=missing), _webhook(ca, token, webhook_token_file=missing)):
        with pytest.raises(ConfigError) as info:
            apiserver_config(options)
        assert missing in info.value.message


def test_bad_ca_and_token_contents(tmp_path: Path, ca: Path, token: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        apiserver_config(_webhook(not_pem, token))
    for content in ("\n", "two tokens\n"):
        token.write_text(content)
        with pytest.raises(ConfigError, match="expected one bearer token"):
            apiserver_config(_webhook(ca, token))
    with pytest.raises(ConfigError, match="contradict"):
        apiserver_config(_webhook(ca, token, webhook_insecure=True))


def test_mounts_and_volumes_agree(ca: Path, token: Path) -> None:
    config = apiserver_config(dataclasses.replace(_webhook(ca, token), log_path=LOG, maxage=30))
    spec = config.manifest_patch["spec"]
    mounts = {m["name"]: m for m in _container(config)["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"] for v in spec["volumes"]}
    assert mounts.keys() == volumes.keys() == {
        "kubetrail-audit-policy", "kubetrail-audit-logs", "kubetrail-audit-webhook"}
    for name, mount in mounts.items():
        assert mount["mountPath"] == volumes[name]["path"]
    assert volumes["kubetrail-audit-policy"] == {"path": POLICY, "type": "File"}
    assert volumes["kubetrail-audit-logs"] == {"path": str(Path(LOG).parent), "type": "DirectoryOrCreate"}
    assert volumes["kubetrail-audit-webhook"]["type"] == "File"
    assert mounts["kubetrail-audit-policy"]["readOnly"] is True
    assert mounts["kubetrail-audit-webhook"]["readOnly"] is True
    assert mounts["kubetrail-audit-logs"]["readOnly"] is False
    assert _container(config)["name"] == "kube-apiserver"


def test_render_parses_back(ca: Path, token: Path) -> None:
    config = apiserver_config(FlagOptions(
        POLICY, log_path=LOG, maxsize=0, webhook_url=URL.replace("https", "http"), webhook_ca=str(ca),
        webhook_token_file=str(token)))
    text = render(config)
    assert text.startswith("# WARNING: ")
    assert "contains a credential" in text and "0600" in text
    warnings, args, patch, kubeconfig = _sections(text)
    assert warnings == ""
    assert tuple(args.splitlines()) == config.args
    for arg in config.args:
        assert f"\n{arg}\n" in text
    assert yaml.safe_load(patch) == config.manifest_patch
    assert yaml.safe_load(kubeconfig) == config.webhook_kubeconfig


def test_render_without_webhook_or_warnings() -> None:
    config = apiserver_config(FlagOptions(POLICY, log_path=LOG, maxage=30, maxbackup=5))
    args, patch = _sections(render(config))
    assert tuple(args.splitlines()) == config.args
    assert yaml.safe_load(patch) == config.manifest_patch
    assert "WARNING" not in render(config)


def test_doctests() -> None:
    result = doctest.testmod(flags_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_webhook_client_certificate_for_mutual_tls(ca: Path, token: Path, tmp_path: Path) -> None:
    key_pem = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    cert.write_bytes(PEM)
    key.write_bytes(key_pem)
    config = apiserver_config(_webhook(ca, token, webhook_client_cert=str(cert),
                                       webhook_client_key=str(key)))
    assert config.webhook_kubeconfig is not None
    (user,) = config.webhook_kubeconfig["users"]
    assert base64.b64decode(user["user"]["client-certificate-data"]) == PEM
    assert base64.b64decode(user["user"]["client-key-data"]) == key_pem
    assert "private key" in render(config)
    with pytest.raises(ConfigError, match="go together"):
        apiserver_config(_webhook(ca, token, webhook_client_cert=str(cert)))
    with pytest.raises(ConfigError, match="no PEM private key"):
        apiserver_config(_webhook(ca, token, webhook_client_cert=str(cert),
                                  webhook_client_key=str(cert)))
    with pytest.raises(ConfigError, match="no PEM certificate"):
        apiserver_config(_webhook(ca, token, webhook_client_cert=str(key),
                                  webhook_client_key=str(key)))
    with pytest.raises(ConfigError, match="no webhook to configure"):
        apiserver_config(FlagOptions(POLICY, log_path=LOG, webhook_client_cert=str(cert),
                                     webhook_client_key=str(key)))
