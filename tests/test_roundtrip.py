"""The simulator's output in every input shape, ingested: every decoder on realistic traffic."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from kubetrail import Archive, ingest
from kubetrail.simulate import write_simulation

SPAN = timedelta(minutes=20)  # the same traffic in every shape (a count would differ)


def _archive_keys(archive: Archive) -> dict[str, set[tuple[str, str, str]]]:
    rows = archive.connect().sql("SELECT cluster, audit_id, stage, verb FROM events").fetchall()
    out: dict[str, set[tuple[str, str, str]]] = {}
    for cluster, audit_id, stage, verb in rows:
        out.setdefault(cluster, set()).add((audit_id, stage, verb))
    return out


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[tuple[str, str, str]]]:
    """The reference: native JSON lines, one file per cluster, ingested with --cluster."""
    tmp = tmp_path_factory.mktemp("native")
    summary = write_simulation(tmp / "audit.log", duration=SPAN, seed=3, clusters=2,
                               scenarios=["exec-shell"])
    archive = Archive(tmp / "data")
    for path in summary.files:
        cluster = path.name.split(".")[1]
        report = ingest(archive, [str(path)], cluster=cluster)
        assert report.exit_code == 0
    keys = _archive_keys(archive)
    assert {c: len(k) for c, k in keys.items()} == summary.per_cluster
    return keys


@pytest.mark.parametrize("fmt", ["eventlist", "eks", "gke", "aks"])
def test_every_shape_ingests_what_the_simulator_wrote(
    tmp_path: Path, fmt: str, native: dict[str, set[tuple[str, str, str]]]
) -> None:
    summary = write_simulation(tmp_path / f"export.{fmt}", duration=SPAN, seed=3, clusters=2,
                               fmt=fmt, scenarios=["exec-shell"])
    archive = Archive(tmp_path / "data")
    for path in summary.files:
        # One file per cluster (native, EKS) takes --cluster; GKE/AKS records name theirs.
        cluster = path.name.split(".")[1] if fmt in ("eventlist", "eks") else "unused"
        report = ingest(archive, [str(path)], cluster=cluster)
        assert report.exit_code == 0, report.to_dict()
        assert report.totals().quarantined == 0
    got = _archive_keys(archive)
    assert {c: len(k) for c, k in got.items()} == summary.per_cluster
    for cluster, keys in got.items():
        if fmt in ("eventlist", "eks", "aks"):  # lossless carriers
            assert keys <= native[cluster]
        else:  # GKE rebuilds events: same requests and verbs, no RequestReceived
            ids = {(a, v) for a, _, v in native[cluster]}
            assert {(a, v) for a, _, v in keys} <= ids
            assert all(stage != "RequestReceived" for _, stage, _ in keys)


def test_ingesting_a_shape_twice_stores_nothing_new(tmp_path: Path) -> None:
    summary = write_simulation(tmp_path / "e.eks", events=1500, seed=4, fmt="eks")
    archive = Archive(tmp_path / "data")
    first = ingest(archive, [str(summary.files[0])])
    again = ingest(archive, [str(summary.files[0])], force=True)
    assert first.totals().stored == 1500
    assert again.totals().stored == 0 and again.totals().duplicate == 1500
