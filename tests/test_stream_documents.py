"""Big exported documents (gcloud arrays, filter-log-events output, EventLists) are streamed
element by element, and give exactly what reading them whole gives."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from kubetrail import Archive, ingest
from kubetrail.events import reader
from kubetrail.events.cloud.encode import eks_log_event, to_gke
from kubetrail.simulate import simulate


@pytest.fixture(scope="module")
def events() -> list[dict[str, object]]:
    return [e for _, e in simulate(duration=timedelta(minutes=10), seed=5)]


def _keys(archive: Archive) -> set[tuple[str, str, str]]:
    return set(archive.connect().sql("SELECT cluster, audit_id, stage FROM events").fetchall())


def _both_ways(tmp_path: Path, doc: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[set, set]:
    whole = Archive(tmp_path / "whole")
    assert ingest(whole, [str(doc)], cluster="c").exit_code == 0
    monkeypatch.setattr(reader, "_WHOLE_DOCUMENT", 64 << 10)  # stream anything over 64 KiB
    streamed = Archive(tmp_path / "streamed")
    report = ingest(streamed, [str(doc)], cluster="c", batch_events=300)
    assert report.exit_code == 0, report.to_dict()
    return _keys(whole), _keys(streamed)


def test_gcloud_array(tmp_path: Path, events: list[dict[str, object]],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    doc = tmp_path / "gke.json"
    doc.write_bytes(to_gke(events, "web"))
    assert doc.stat().st_size > 10 * (64 << 10)
    whole, streamed = _both_ways(tmp_path, doc, monkeypatch)
    assert streamed == whole and len(whole) > 1000


def test_filter_log_events_document(tmp_path: Path, events: list[dict[str, object]],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    doc = tmp_path / "eks.json"
    doc.write_text(json.dumps({"events": [eks_log_event(e) for e in events],
                               "searchedLogStreams": []}, indent=2))
    whole, streamed = _both_ways(tmp_path, doc, monkeypatch)
    assert streamed == whole and len(whole) == len(events)


def test_pretty_eventlist(tmp_path: Path, events: list[dict[str, object]],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    doc = tmp_path / "list.json"
    doc.write_text(json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                               "metadata": {}, "items": events}, indent=1))
    whole, streamed = _both_ways(tmp_path, doc, monkeypatch)
    assert streamed == whole and len(whole) == len(events)


def test_a_broken_streamed_document_keeps_what_came_before(
        tmp_path: Path, events: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch) -> None:
    text = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                       "items": events}, indent=1)
    cut = len(text) * 3 // 4
    doc = tmp_path / "broken.json"
    doc.write_text(text[:cut] + " oops" + text[cut:])
    monkeypatch.setattr(reader, "_WHOLE_DOCUMENT", 64 << 10)
    archive = Archive(tmp_path / "data")
    report = ingest(archive, [str(doc)], cluster="c", batch_events=300)
    assert report.exit_code == 3
    (reason,) = report.reasons
    assert "invalid JSON document at line" in reason
    assert len(events) // 2 < len(_keys(archive)) < len(events)
