"""The audit log's hash chain: written by several processes at once, and tampered with by hand."""

import argparse
import hashlib
import json
import multiprocessing

import duckdb
import pytest
from pydantic import ValidationError

from resources.audit_log import GENESIS_HASH, AuditEntry, AuditHead, AuditLogResource, DuckDBAuditLog, item_hash

PROCESSES, ENTRIES_EACH = 4, 50
SECRET = "INVOICE 2026-0042\nACME Corp, IBAN DE89 3704 0044 0532 0130 00\nTotal due: EUR 12,345.67"


def _entry(i: int, run: str = "run-a", **extra) -> AuditEntry:
    return AuditEntry(event="call", run_id=run, step_key="extract", asset_key="invoices/extracted", partition_key="2026-03-03",
                      item_hash=item_hash(f"document {run} {i}"), classification="internal", model_id="local-gemma3-270m",
                      residency="on_prem", redaction="none", checks={"schema_valid": True, "i": i}, **extra)


def _filled(tmp_path, n: int = 10) -> DuckDBAuditLog:
    log = DuckDBAuditLog(tmp_path / "audit.duckdb")
    log.append([_entry(i) for i in range(n)])
    return log


def _sql(log: DuckDBAuditLog, *statements: str) -> None:
    """Tamper the way anyone with the file and the duckdb CLI could."""
    conn = duckdb.connect(str(log.path))
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _append_many(path: str, writer: int, start) -> None:
    log = DuckDBAuditLog(path, timeout_s=120)
    start.wait(120)  # all writers released together, so their appends really interleave
    for i in range(ENTRIES_EACH):
        log.append([_entry(i, run=f"run-{writer}")])


def test_parallel_processes_extend_one_unbroken_chain(tmp_path):
    path = str(tmp_path / "audit.duckdb")
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_append_many, args=(path, w, start)) for w in range(PROCESSES)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    log = DuckDBAuditLog(path)
    result = log.verify()
    assert result.ok, result.problems
    assert result.entries == PROCESSES * ENTRIES_EACH
    entries = log.entries()
    assert [e.seq for e in entries] == list(range(1, PROCESSES * ENTRIES_EACH + 1))
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.entry_hash for a, b in zip(entries, entries[1:]))
    for w in range(PROCESSES):
        mine = log.entries(run_id=f"run-{w}")
        # Nothing lost, nothing duplicated, and each writer's entries in the order it wrote them.
        assert [e.checks["i"] for e in mine] == list(range(ENTRIES_EACH))
    assert len({e.actor for e in entries}) == PROCESSES  # one actor (user@host:pid) per process
    assert log.head() == AuditHead(PROCESSES * ENTRIES_EACH, entries[-1].entry_hash)


def test_batch_append_seals_in_order_and_leaves_the_callers_entries_alone(tmp_path):
    log = DuckDBAuditLog(tmp_path / "audit.duckdb")
    fresh = [_entry(i) for i in range(3)]
    sealed = log.append(fresh)
    assert [e.seq for e in sealed] == [1, 2, 3] and all(e.seq is None and e.entry_hash is None for e in fresh)
    assert sealed[0].prev_hash == GENESIS_HASH and sealed[1].prev_hash == sealed[0].entry_hash
    assert log.append([_entry(3)])[0].prev_hash == sealed[2].entry_hash
    with pytest.raises(ValueError, match="already sealed"):
        log.append(sealed[:1])
    result = log.verify()
    assert result.ok and result.entries == 4 and result.head == log.head() and not result.warnings


def test_an_empty_or_missing_log_verifies_without_being_created(tmp_path):
    log = DuckDBAuditLog(tmp_path / "none" / "audit.duckdb")
    result = log.verify()
    assert result.ok and result.entries == 0 and result.head == AuditHead(0, GENESIS_HASH)
    assert log.head() == AuditHead(0, GENESIS_HASH) and log.entries() == []
    assert not log.path.exists()


def test_an_edited_field_is_caught_at_its_seq(tmp_path):
    log = _filled(tmp_path)
    assert log.verify().ok
    _sql(log, "UPDATE audit_log SET residency = 'us-east' WHERE seq = 7")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 7
    assert len(result.problems) == 1 and result.problems[0].startswith("entry 7:") and "edited" in result.problems[0]


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(tmp_path):
    log = _filled(tmp_path)
    forged = log.entries()[4].model_copy(update={"model_id": "gpt-4o", "residency": "us"})
    _sql(log, f"UPDATE audit_log SET model_id = 'gpt-4o', residency = 'us', entry_hash = '{forged.computed_hash()}' WHERE seq = 5")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 6
    assert result.problems[0].startswith("entry 6:") and "prev_hash is not entry 5's hash" in result.problems[0]


def test_a_rewritten_chain_is_caught_only_by_a_published_head(tmp_path):
    """Re-hashing every entry from an edit onwards leaves a self-consistent chain: the anchor is what catches it."""
    log = _filled(tmp_path)
    published = log.head()
    entries = log.entries()
    prev = entries[2].entry_hash
    for entry in entries[3:]:
        update = {"prev_hash": prev, "model_id": "gpt-4o"} if entry.seq == 4 else {"prev_hash": prev}
        forged = entry.model_copy(update=update)
        prev = forged.computed_hash()
        _sql(log, f"UPDATE audit_log SET model_id = '{forged.model_id}', prev_hash = '{forged.prev_hash}', "
                  f"entry_hash = '{prev}' WHERE seq = {entry.seq}")
    log.sidecar_path.unlink()  # a careful forger removes the sidecar too
    chain_only = log.verify()
    assert chain_only.ok and chain_only.warnings  # the chain alone cannot tell...
    anchored = log.verify(expected_head=published)
    assert not anchored.ok and anchored.first_bad_seq == 10 and "rewritten" in anchored.problems[0]  # ...the anchor can


def test_a_deleted_middle_entry_is_caught(tmp_path):
    log = _filled(tmp_path)
    _sql(log, "DELETE FROM audit_log WHERE seq = 5")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 5 and result.entries == 9
    assert result.problems == [f"entry 6: entry 5 missing (deleted); prev_hash is not entry 4's hash "
                               f"(an entry before it was deleted, inserted, reordered or re-hashed)"]


def test_two_swapped_entries_are_caught(tmp_path):
    log = _filled(tmp_path)
    _sql(log, "UPDATE audit_log SET seq = -3 WHERE seq = 3", "UPDATE audit_log SET seq = 3 WHERE seq = 4",
         "UPDATE audit_log SET seq = 4 WHERE seq = -3")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3
    assert [p.split(":")[0] for p in result.problems] == ["entry 3", "entry 4", "entry 5"]


def test_an_inserted_entry_is_caught_even_when_it_is_itself_well_formed(tmp_path):
    log = _filled(tmp_path, n=3)
    first = log.entries()[0]
    # Make room after entry 1 and slip in a forged entry that links to it with a correct hash of its own.
    _sql(log, "UPDATE audit_log SET seq = 4 WHERE seq = 3", "UPDATE audit_log SET seq = 3 WHERE seq = 2")
    fake = _entry(99).model_copy(update={"seq": 2, "prev_hash": first.entry_hash, "checks": {}})
    conn = duckdb.connect(str(log.path))
    conn.execute("INSERT INTO audit_log (seq, recorded_at, event, item_hash, redaction, checks, actor, prev_hash, entry_hash) "
                 "VALUES (?, ?, ?, ?, ?, '{}', ?, ?, ?)",
                 [2, fake.recorded_at, fake.event, fake.item_hash, fake.redaction, fake.actor, fake.prev_hash,
                  fake.model_copy(update={k: None for k in ("run_id", "step_key", "asset_key", "partition_key",
                                                             "classification", "model_id", "residency")}).computed_hash()])
    conn.close()
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3 and result.entries == 4
    assert result.problems[0].startswith("entry 3: prev_hash is not entry 2's hash")


def test_a_truncated_tail_is_caught_by_the_expected_head_and_by_the_sidecar(tmp_path):
    log = _filled(tmp_path)
    published = log.head()
    assert published.count == 10
    _sql(log, "DELETE FROM audit_log WHERE seq > 7")
    by_sidecar = log.verify()
    assert not by_sidecar.ok and by_sidecar.first_bad_seq == 8
    assert "newest 3 entries were deleted" in by_sidecar.problems[0] and "audit.duckdb.head" in by_sidecar.problems[0]

    # The pipeline keeps appending: the next append must not wipe the sidecar's evidence.
    log.append([_entry(100)])
    assert not log.verify().ok

    log.sidecar_path.unlink()
    assert log.verify().ok  # the chain alone cannot see a cut tail...
    by_anchor = log.verify(expected_head=published)
    assert not by_anchor.ok and "expected head" in by_anchor.problems[0]  # ...the published head can
    # A head published before the cut that the chain still reaches is fine: later appends don't matter.
    assert log.verify(expected_head=AuditHead(7, DuckDBAuditLog(log.path).entries()[6].entry_hash)).ok


def test_item_hash_never_carries_the_content(tmp_path):
    digest = item_hash(SECRET)
    assert digest == hashlib.sha256(SECRET.encode()).hexdigest() and len(digest) == 64
    assert digest != SECRET and SECRET not in digest and "ACME" not in digest
    assert item_hash(digest) != digest and item_hash(SECRET.encode()) == digest
    with pytest.raises(ValidationError, match="never stores content"):
        AuditEntry(event="call", item_hash=SECRET)

    log = DuckDBAuditLog(tmp_path / "audit.duckdb")
    log.append([AuditEntry(event="call", item_hash=digest, redaction=2)])
    assert log.entries()[0].redaction == "redacted:2"
    for stored in (log.path, log.sidecar_path):
        data = stored.read_bytes()
        assert b"ACME" not in data and b"DE89" not in data


def test_the_resource_keeps_the_log_beside_dagsters_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert AuditLogResource().resolved_path() == tmp_path / "home" / "ai_orchestration" / "audit.duckdb"
    assert AuditLogResource(path=str(tmp_path / "x.duckdb")).log().path == tmp_path / "x.duckdb"


# ---------------------------------------------------------------------- ai-orch audit


def _cli(capsys, *argv: str) -> tuple[int, str]:
    from orchestration_assets.audit_cli import add_commands

    parser = argparse.ArgumentParser(prog="ai-orch")
    runners = add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    capsys.readouterr()
    code = runners[args.command](args)
    return code, capsys.readouterr().out


def test_cli_verify_exits_0_when_intact_and_4_when_tampered(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    log = AuditLogResource().log()
    log.append([_entry(i, run="run-a") for i in range(4)] + [_entry(i, run="run-b") for i in range(2)])
    head = log.head()

    code, out = _cli(capsys, "audit", "verify")
    assert code == 0 and f"6 entries, head {head}" in out
    code, out = _cli(capsys, "audit", "verify", "--json", "--expect-head", str(head))
    assert code == 0 and json.loads(out) == {
        "path": str(log.path), "ok": True, "entries": 6, "problems": [], "first_bad_seq": None, "head": str(head), "warnings": []}

    code, out = _cli(capsys, "audit", "show", "--run", "run-b", "--json")
    assert code == 0 and [json.loads(line)["seq"] for line in out.splitlines()] == [5, 6]
    code, out = _cli(capsys, "audit", "show", "--limit", "2")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["5", "6"]

    _sql(log, "UPDATE audit_log SET classification = 'public' WHERE seq = 3")
    code, out = _cli(capsys, "audit", "verify")
    assert code == 4 and "TAMPERED" in out and "  entry 3:" in out
    code, out = _cli(capsys, "audit", "verify", "--json")
    assert code == 4 and json.loads(out)["first_bad_seq"] == 3


def test_cli_catches_a_cut_tail_with_expect_head_and_rejects_a_malformed_one(tmp_path, monkeypatch, capsys):
    from orchestration_assets.cli_errors import CliError

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    log = AuditLogResource().log()
    log.append([_entry(i) for i in range(5)])
    head = log.head()
    _sql(log, "DELETE FROM audit_log WHERE seq = 5")
    log.sidecar_path.unlink()
    code, out = _cli(capsys, "audit", "verify")
    assert code == 0 and "warning: no sidecar" in out
    code, out = _cli(capsys, "audit", "verify", "--expect-head", str(head))
    assert code == 4 and "tail truncated" in out
    with pytest.raises(CliError, match="COUNT:SHA256HEX"):
        _cli(capsys, "audit", "verify", "--expect-head", "5")
    with pytest.raises(CliError, match="--limit"):
        _cli(capsys, "audit", "show", "--limit", "0")


def test_a_corrupted_file_fails_verification_and_an_emptied_one_is_warned_about(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    log = AuditLogResource().log()
    log.append([_entry(i) for i in range(3)])
    _sql(log, "DELETE FROM audit_log")
    log.sidecar_path.unlink()
    code, out = _cli(capsys, "audit", "verify", "--json")
    report = json.loads(out)
    assert code == 0 and report["entries"] == 0 and "holds no entries and there is no sidecar" in report["warnings"][0]

    log.path.write_bytes(bytes(range(256)) * 16)  # overwritten with junk
    code, out = _cli(capsys, "audit", "verify", "--json")
    report = json.loads(out)
    assert code == 4 and not report["ok"] and "cannot be read as an audit log" in report["problems"][0]
