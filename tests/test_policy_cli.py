"""Every `kubetrail policy` command, end to end in a real process, on real-world-shaped
policies (the Kubernetes documentation's example, the GKE default) and on the simulator's
traffic; and the messages for policy files the API server would refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import assert_clean, ingest_into, run_cli, run_cli_many
from kubetrail.policy import load_policy
from kubetrail.simulate import write_simulation

POLICIES = Path(__file__).parent / "data" / "policies"
REAL = ("docs-example.yaml", "gke-style.yaml")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A simulated day of a small cluster (with an exec and a secrets dump), as a log and
    ingested."""
    base = tmp_path_factory.mktemp("policy-sim")
    log = base / "audit.log"
    write_simulation(log, events=20_000, seed=3, scenarios=("exec-shell", "secrets-dump"))
    ingest_into(base / "data", [log])
    return log, base / "data"


@pytest.mark.parametrize("name", REAL)
def test_real_policies_through_every_command(name: str, sim: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    log, data = sim
    policy = POLICIES / name
    recommended = tmp_path / "recommended.yaml"
    code, _, err = run_cli("policy", "recommend", "--out", recommended)
    assert code == 0, err
    exec_event = next(json.loads(line) for line in log.read_text().splitlines()
                      if '"subresource":"exec"' in line)
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps(exec_event) + "\n" + json.dumps(
        {"user": {"username": "alice", "groups": ["system:authenticated"]}, "verb": "get",
         "resourceRequest": True, "apiVersion": "v1", "resource": "secrets",
         "namespace": "default", "name": "db"}) + "\n")
    calls = [
        ["policy", "validate", policy],
        ["policy", "lint", policy, "-o", "json"],
        ["policy", "eval", policy, "--request", f"@{requests}"],
        ["policy", "explain", policy, "--request", f"@{requests}"],
        ["policy", "simulate", policy, log, "-o", "json"],
        ["--data-dir", data, "policy", "simulate", policy, "--archive", "-o", "json"],
        ["policy", "diff", policy, recommended, log, "-o", "json"],
        ["policy", "flags", policy, "--log-path", "/var/log/kubernetes/audit/audit.log",
         "--maxage", "30", "--maxbackup", "10", "--maxsize", "100"],
    ]
    results = run_cli_many(calls)
    for call, (code, _, err) in zip(calls, results, strict=True):
        assert code == 0, (call, err)
        assert_clean(err)
    validate, lint, evaluated, explained, sim_log, sim_archive, diff, flags = (r[1] for r in results)
    assert validate.startswith("valid")
    findings = [json.loads(line) for line in lint.splitlines()]
    assert all({"id", "severity", "rule", "message", "fix"} <= set(f) for f in findings)
    decisions = [json.loads(line) for line in evaluated.splitlines()]
    loaded = load_policy(policy.read_text())
    assert len(decisions) == 2 and decisions[1]["level"] == "Metadata"  # secrets: never bodies
    assert decisions[0]["level"] == loaded.evaluate({
        "user": exec_event["user"], "verb": "create", "resourceRequest": True,
        "apiVersion": "v1", "resource": "pods", "subresource": "exec",
        "namespace": exec_event["objectRef"]["namespace"],
        "name": exec_event["objectRef"]["name"]}).level
    assert "matches → level" in explained or "no rule matched" in explained
    a, b = json.loads(sim_log), json.loads(sim_archive)
    assert a["before"]["events"] == b["before"]["events"] == 20_000
    assert a["after"] == b["after"]
    assert sum(r["requests"] for r in a["rules"]) == a["before"]["requests"]
    assert json.loads(diff)["changes"]
    assert "--audit-policy-file=" in flags and "--audit-log-maxage=30" in flags


def test_recommend_then_lint_strict_passes_and_leaky_fails(tmp_path: Path, sim: tuple[Path, Path]
                                                          ) -> None:
    log, _ = sim
    tuned = tmp_path / "tuned.yaml"
    code, _, err = run_cli("policy", "recommend", "--from", log, "--max-events-per-day", "5000",
                           "--out", tuned)
    assert code == 0, err
    text = tuned.read_text()
    assert "Target: at most 5,000 events/day." in text
    results = run_cli_many([["policy", "lint", tuned, "--strict"],
                            ["policy", "lint", POLICIES / "leaky.yaml", "--strict"],
                            ["policy", "lint", POLICIES / "leaky.yaml"],
                            ["policy", "lint", "--list"]])
    assert results[0][0] == 0, results[0][2]
    assert results[1][0] == 1 and "credentials-in-bodies" in results[1][1]
    assert results[2][0] == 0  # without --strict findings do not fail the command
    assert "shadowed-rule" in results[3][1]


@pytest.mark.parametrize(("content", "message"), [
    ("", "the policy file is empty"),
    ("rules: [\n  - level: Metadata\n", "not valid YAML or JSON (line"),
    ("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: Metadata\n",
     "removed in Kubernetes 1.24"),
    ("apiVersion: v1\nkind: ConfigMap\ndata: {}\n", "not an audit Policy"),
    ("- 1\n- 2\n", "expected a Policy object"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n", "0 rules"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n"
     "  nonResourceURLs: [logs]\n",
     'rules[0].level: Unsupported value: "Everything"'),
])
def test_refused_policies_get_the_reason_and_exit_1(tmp_path: Path, content: str, message: str
                                                    ) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(content)
    code, out, err = run_cli("policy", "validate", path)
    assert code == 1 and message in err, err
    assert_clean(err)
    code, out, err = run_cli("policy", "validate", path, "-o", "json")
    assert code == 1 and json.loads(out)["valid"] is False


def test_every_error_is_listed_with_its_field_path(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["Sometimes"],
        "rules": [{"level": "Metadata"},
                  {"level": "None", "resources": [{"group": "Apps", "resourceNames": ["x"]}]},
                  {"level": "Request", "nonResourceURLs": ["/ok", "/bad/*/x", "nope"]}]}))
    code, out, _ = run_cli("policy", "validate", path, "-o", "json")
    assert code == 1
    fields = [p["field"] for p in json.loads(out)["problems"]]
    assert fields == ["omitStages[0]", "rules[1].resources[0].group",
                      "rules[1].resources[0].resourceNames", "rules[2].nonResourceURLs[1]",
                      "rules[2].nonResourceURLs[2]"]


def test_unknown_fields_warn_but_validate(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
                    "  levle: None\n")
    code, out, err = run_cli("policy", "validate", path)
    assert code == 0 and out.startswith("valid")
    assert 'unknown field "rules[0].levle"' in err


def test_bad_requests_and_missing_files_are_explained(tmp_path: Path) -> None:
    policy = POLICIES / "docs-example.yaml"
    calls = [["policy", "eval", policy, "--request", "{not json"],
             ["policy", "eval", policy, "--request", '{"verb": 3}'],
             ["policy", "eval", policy, "--request", f"@{tmp_path / 'none.jsonl'}"],
             ["policy", "eval", tmp_path / "missing.yaml", "--request", "{}"],
             ["policy", "eval", policy]]
    results = run_cli_many(calls)
    expected = ["not JSON", '"verb" must be a string', "request file not found",
                "policy file not found", "no request given"]
    for (code, _, err), text in zip(results, expected, strict=True):
        assert code == 1 and text in err, err
        assert_clean(err)


def test_policy_from_stdin(tmp_path: Path) -> None:
    text = (POLICIES / "gke-style.yaml").read_bytes()
    code, out, err = run_cli("policy", "eval", "-", "--request",
                             '{"user": null, "verb": "get", "path": "/healthz"}', stdin=text)
    assert code == 0, err
    assert json.loads(out)["rule"] is not None
