"""Settings precedence: defaults < kubetrail.yaml < KUBETRAIL_* < flags; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrail import ConfigError, load_settings
from kubetrail.config import settings_schema


def test_defaults_use_the_xdg_data_home(tmp_path: Path) -> None:
    s = load_settings(env={"HOME": str(tmp_path)}, config_path=None)
    assert s.data_dir == tmp_path / ".local/share/kubetrail"
    s = load_settings(env={"HOME": str(tmp_path), "XDG_DATA_HOME": "/x"})
    assert s.data_dir == Path("/x/kubetrail")
    assert s.cluster == "default"


def test_precedence_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "kubetrail.yaml"
    cfg.write_text("data_dir: /from/file\ncluster: file-cluster\nbatch_events: 10\n")
    env = {"HOME": str(tmp_path)}
    s = load_settings(env=env)
    assert (s.data_dir, s.cluster, s.batch_events) == (Path("/from/file"), "file-cluster", 10)
    assert s.config_path == Path("kubetrail.yaml")
    env["KUBETRAIL_CLUSTER"] = "env-cluster"
    env["KUBETRAIL_DATA_DIR"] = "/from/env"
    s = load_settings(env=env)
    assert (s.data_dir, s.cluster, s.batch_events) == (Path("/from/env"), "env-cluster", 10)
    s = load_settings(env=env, overrides={"data_dir": "/from/flag", "cluster": None})
    assert (s.data_dir, s.cluster) == (Path("/from/flag"), "env-cluster")


@pytest.mark.parametrize(("text", "message"), [
    ("data_dir: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "must hold a mapping"),
    ("colour: blue\n", "unknown setting 'colour'"),
    ("batch_events: lots\n", "batch_events must be a int"),
    ("progress: maybe\n", "progress must be a bool"),
])
def test_bad_config_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "k.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(env={"HOME": str(tmp_path)}, config_path=cfg)


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"HOME": str(tmp_path)}, config_path=tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"HOME": str(tmp_path), "KUBETRAIL_CONFIG": str(tmp_path / "n.yaml")})


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KUBETRAIL_BATCH_EVENTS"):
        load_settings(env={"HOME": str(tmp_path), "KUBETRAIL_BATCH_EVENTS": "-3"})


def test_schema_lists_every_setting() -> None:
    schema = settings_schema()
    assert set(schema["properties"]) == {"data_dir", "cluster", "batch_events", "progress",
                                         "signing_key", "alerts", "retention", "redaction"}
    assert schema["properties"]["alerts"]["type"] == "object"
    assert schema["properties"]["signing_key"]["type"] == ["string", "null"]
    assert schema["additionalProperties"] is False
