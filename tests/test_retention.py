"""Retention: segments removed by age and size, globally and per cluster; every removal on
the record so that `verify` still holds, and a dry run touches nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from conftest import T0, assert_clean, bulk_events, render, run_cli
from kubetrail.errors import ConfigError
from kubetrail.ingest import ingest
from kubetrail.store.archive import Archive
from kubetrail.store.evidence import verify_archive
from kubetrail.store.retention import RetentionPolicy, apply_retention, parse_size, plan_retention


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    """Days 0, 10 and 20 for clusters prod and staging: six segments, 40 events each."""
    archive = Archive(tmp_path / "data")
    for cluster in ("prod", "staging"):
        for day in (0, 10, 20):
            log = tmp_path / f"{cluster}-{day}.log"
            log.write_text(render(bulk_events(40, start=100_000 * (day + 1) + len(cluster),
                                              base=T0 + timedelta(days=day))))
            ingest(archive, [str(log)], cluster=cluster)
    return archive


def kept(archive: Archive) -> list[tuple[str, int]]:
    con = archive.connect()
    try:
        return sorted(con.execute("SELECT cluster, date_diff('day', TIMESTAMPTZ '2026-11-01', "
                                  "min(time))::INT FROM events GROUP BY cluster, "
                                  "date_trunc('day', time)").fetchall())
    finally:
        con.close()


NOW = T0 + timedelta(days=25)


def test_max_age_with_a_per_cluster_override(archive: Archive) -> None:
    policy = RetentionPolicy.from_mapping({"max_age": "20d",
                                           "clusters": {"prod": {"max_age": "30d"}}})
    removals = apply_retention(archive, policy, NOW)
    assert [(r.cluster, r.reason) for r in removals] == [("staging", "max_age 20d")]
    assert kept(archive) == [("prod", 0), ("prod", 10), ("prod", 20), ("staging", 10),
                             ("staging", 20)]
    result = verify_archive(archive.root, archive.segment_files(), None)
    assert result.ok and result.deleted == 1, result.problems


def test_max_size_globally_and_per_cluster(archive: Archive) -> None:
    sizes = {e["segment"]: e["bytes"] for e in archive.manifest()}
    one = max(sizes.values())
    policy = RetentionPolicy.from_mapping({"max_size": f"{4 * one}B",
                                           "clusters": {"staging": {"max_size": f"{one}B"}}})
    removals = plan_retention(archive, policy, NOW)
    reasons = sorted((r.cluster, r.reason.split(" (")[0]) for r in removals)
    # staging keeps its newest segment only; then the whole archive fits in four.
    assert [c for c, _ in reasons].count("staging") == 2
    apply_retention(archive, policy, NOW)
    assert kept(archive) == [("prod", 0), ("prod", 10), ("prod", 20), ("staging", 20)]
    assert sum(p.stat().st_size for p in archive.segment_files()) <= 4 * one
    assert verify_archive(archive.root, archive.segment_files(), None).ok


def test_a_dry_run_touches_nothing_and_a_second_run_finds_nothing(archive: Archive) -> None:
    policy = RetentionPolicy.from_mapping({"max_age": "1d"})
    before = sorted(archive.segment_files())
    assert len(apply_retention(archive, policy, NOW, dry_run=True)) == 6
    assert sorted(archive.segment_files()) == before
    assert len(apply_retention(archive, policy, NOW)) == 6
    assert apply_retention(archive, policy, NOW) == []
    assert [e["op"] for e in archive.manifest() if "op" in e] == ["delete"] * 6


def test_retention_settings_are_checked() -> None:
    assert parse_size("2GiB") == 2 * 1024**3 and parse_size("500MB") == 500_000_000
    for bad in ({"max_age": "soon"}, {"max_size": "lots"}, {"keep": "1d"},
                {"clusters": {"a": {"clusters": {}}}}):
        with pytest.raises(ConfigError):
            RetentionPolicy.from_mapping(bad)


def test_retention_command(archive: Archive, tmp_path: Path) -> None:
    data = archive.root
    code, _, err = run_cli("--data-dir", data, "retention", "apply")
    assert code != 0 and "no retention is configured" in err
    assert_clean(err)
    config = tmp_path / "kubetrail.yaml"
    config.write_text("retention:\n  max_age: 12h\n  clusters:\n    prod:\n      max_age: 10000d\n")
    code, out, err = run_cli("--config", config, "--data-dir", data, "retention", "apply",
                             "--dry-run")
    assert code == 0 and "would remove 3 segment(s), 120 rows" in out, err
    code, out, err = run_cli("--config", config, "--data-dir", data, "retention", "apply",
                             "-o", "json")
    assert code == 0, err
    assert {orjson.loads(line)["cluster"] for line in out.splitlines()} == {"staging"}
    code, out, err = run_cli("--data-dir", data, "verify")
    assert code == 0 and "3 removed by retention" in out, err
