"""Tamper evidence: every kind of tampering with a signed archive is found and named, while
deletions by retention are not called tampering; keys and the `verify` command."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from conftest import assert_clean, bulk_events, render, run_cli
from kubetrail.ingest import ingest
from kubetrail.store.archive import Archive
from kubetrail.store.evidence import SIGNATURES, entry_hash, generate_keys, load_public_key, verify_archive


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Archive, Path]:
    """An archive of four segments (two clusters, two loads), signed after every commit."""
    key = tmp_path / "keys" / "signing.key"
    generate_keys(key)
    archive = Archive(tmp_path / "data", signing_key=key)
    for n, cluster in enumerate(("prod", "prod", "staging", "staging")):
        log = tmp_path / f"audit-{n}.log"
        log.write_text(render(bulk_events(50, start=1000 * (n + 1))))
        ingest(archive, [str(log)], cluster=cluster)
    return archive, key.with_suffix(".pub")


def check(archive: Archive, public: Path | None) -> list[tuple[str, str]]:
    key = load_public_key(public) if public else None
    result = verify_archive(archive.root, archive.segment_files(), key)
    return [(p.kind, p.message) for p in result.problems]


def kinds(problems: list[tuple[str, str]]) -> set[str]:
    return {k for k, _ in problems}


def manifest_lines(archive: Archive) -> list[bytes]:
    return archive.manifest_path.read_bytes().splitlines(keepends=True)


def test_an_untouched_archive_verifies_with_its_signature(signed: tuple[Archive, Path]) -> None:
    archive, public = signed
    result = verify_archive(archive.root, archive.segment_files(), load_public_key(public))
    assert result.ok, result.problems
    assert result.segments == len(archive.segment_files()) == 4
    assert result.rows == 200
    assert result.signed_seq == result.head_seq == 4
    assert result.head_hash == archive.manifest_head()[1]
    assert stat.S_IMODE(os.stat(archive.root / SIGNATURES).st_mode) == 0o600


def _flip_byte(archive: Archive, public: Path) -> None:
    path = archive.segment_files()[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _delete_segment(archive: Archive, public: Path) -> None:
    archive.segment_files()[0].unlink()


def _insert_segment(archive: Archive, public: Path) -> None:
    source = archive.segment_files()[0]
    shutil.copy(source, source.with_name("seg-20261101T000000-aaaaaaaaaaaa.parquet"))


def _swap_lines(archive: Archive, public: Path) -> None:
    lines = manifest_lines(archive)
    lines[1], lines[2] = lines[2], lines[1]
    archive.manifest_path.write_bytes(b"".join(lines))


def _edit_entry(archive: Archive, public: Path) -> None:  # rows changed, hash left alone
    lines = manifest_lines(archive)
    entry = orjson.loads(lines[1])
    entry["rows"] += 1
    lines[1] = orjson.dumps(entry) + b"\n"
    archive.manifest_path.write_bytes(b"".join(lines))


def _rewrite_last_entry_consistently(archive: Archive, public: Path) -> None:
    lines = manifest_lines(archive)
    entry = orjson.loads(lines[-1])
    entry["max_time"] = "2020-01-01T00:00:00+00:00"
    entry["hash"] = entry_hash(entry)  # the chain holds; only the signature can tell
    lines[-1] = orjson.dumps(entry) + b"\n"
    archive.manifest_path.write_bytes(b"".join(lines))


def _truncate_manifest(archive: Archive, public: Path) -> None:
    archive.manifest_path.write_bytes(b"".join(manifest_lines(archive)[:-1]))


def _forge_without_the_key(archive: Archive, public: Path) -> None:
    """Drop a segment and rebuild the whole chain so it is consistent again."""
    entries = [orjson.loads(line) for line in manifest_lines(archive)]
    victim = entries.pop(1)
    (archive.root / victim["segment"]).unlink()
    prev = ""
    for seq, entry in enumerate(entries, 1):
        entry["seq"], entry["prev"] = seq, prev
        entry["hash"] = prev = entry_hash(entry)
    archive.manifest_path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))


def _bad_signature(archive: Archive, public: Path) -> None:
    path = archive.root / SIGNATURES
    lines = path.read_bytes().splitlines(keepends=True)
    sig = orjson.loads(lines[-1])
    sig["signature"] = ("0" if sig["signature"][0] != "0" else "1") + sig["signature"][1:]
    lines[-1] = orjson.dumps(sig) + b"\n"
    path.write_bytes(b"".join(lines))


def _damage_manifest(archive: Archive, public: Path) -> None:
    with open(archive.manifest_path, "ab") as fh:
        fh.write(b'{"seq": 5, "segment": \n')


@pytest.mark.parametrize(("tamper", "expected"), [
    (_flip_byte, {"modified"}),
    (_delete_segment, {"missing"}),
    (_insert_segment, {"inserted"}),
    (_swap_lines, {"chain"}),
    (_edit_entry, {"rewritten"}),
    (_rewrite_last_entry_consistently, {"rewritten"}),
    (_truncate_manifest, {"truncated", "inserted"}),
    (_forge_without_the_key, {"rewritten", "truncated"}),
    (_bad_signature, {"signature"}),
    (_damage_manifest, {"damaged"}),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_every_kind_of_tampering_is_found_and_named(
        signed: tuple[Archive, Path], tamper: Callable[[Archive, Path], None],
        expected: set[str]) -> None:
    archive, public = signed
    tamper(archive, public)
    problems = check(archive, public)
    assert kinds(problems) == expected, problems
    assert all(message for _, message in problems)


def test_a_truncated_manifest_is_found_even_without_signatures(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "data")
    for n in range(3):
        log = tmp_path / f"a{n}.log"
        log.write_text(render(bulk_events(20, start=100 * (n + 1))))
        ingest(archive, [str(log)])
    assert check(archive, None) == []
    archive.manifest_path.write_bytes(b"".join(manifest_lines(archive)[:-1]))
    (kind, message), = check(archive, None)
    assert kind == "inserted" and "not in the manifest" in message


def test_another_key_does_not_verify(signed: tuple[Archive, Path], tmp_path: Path) -> None:
    archive, _ = signed
    other, _ = generate_keys(tmp_path / "other" / "k.key")
    assert kinds(check(archive, other)) == {"signature"}


def test_deletions_by_retention_are_recorded_not_reported(signed: tuple[Archive, Path]) -> None:
    archive, public = signed
    gone = archive.segment_files()[0]
    archive.delete_segment(gone, "max_age 30d")
    assert not gone.exists()
    result = verify_archive(archive.root, archive.segment_files(), load_public_key(public))
    assert result.ok, result.problems
    assert (result.deleted, result.segments, result.signed_seq) == (1, 3, 5)
    last = archive.manifest()[-1]
    assert (last["op"], last["reason"]) == ("delete", "max_age 30d")


def test_verify_and_keys_commands(tmp_path: Path) -> None:
    key = tmp_path / "conf" / "signing.key"
    data = tmp_path / "data"
    code, out, err = run_cli("--data-dir", data, "keys", "generate", "--out", key)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and key.with_suffix(".pub").exists()
    assert (data / "keys" / "signing.pub").read_bytes() == key.with_suffix(".pub").read_bytes()
    code, _, err = run_cli("--data-dir", data, "keys", "generate", "--out", key)
    assert code != 0 and "exists" in err
    assert_clean(err)
    log = tmp_path / "audit.log"
    log.write_text(render(bulk_events(30)))
    env = {"KUBETRAIL_SIGNING_KEY": str(key)}
    code, _, err = run_cli("--data-dir", data, "--no-progress", "ingest", log, env=env)
    assert code == 0, err
    code, out, err = run_cli("--data-dir", data, "verify", "--public-key", key.with_suffix(".pub"))
    assert code == 0, err
    assert "1 segments, 30 rows" in out and "signed up to entry 1" in out
    code, out, _ = run_cli("--data-dir", data, "verify", "--head")
    seq, digest = out.split()
    assert seq == "1" and digest == Archive(data).manifest_head()[1]
    segment = Archive(data).segment_files()[0]
    segment.write_bytes(segment.read_bytes()[:-10])
    code, out, err = run_cli("--data-dir", data, "verify", "-o", "json")
    assert code == 4
    report = orjson.loads(out)
    assert not report["ok"] and report["problems"][0]["kind"] == "modified"
    assert_clean(err)
