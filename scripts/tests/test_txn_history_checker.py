"""The transactional history checker (txn_history_check.py) reports each
anomaly it names in a hand-made history that has it, and nothing in a clean
one. No broker: the histories are written with the recorder the fault tests
use, on a clock that ticks once per event so they are ordered as written."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from txn_history_check import (  # noqa: E402
    READ_COMMITTED,
    READ_UNCOMMITTED,
    Fate,
    HistoryError,
    Kind,
    Record,
    Report,
    TxnHistory,
)

SCRIPT = Path(__file__).resolve().parents[1] / "txn_history_check.py"

FinalReads = dict[str, list[Record]]  # isolation -> records


def clean_history() -> tuple[TxnHistory, FinalReads]:
    """A history where nothing went wrong, without its final reads, which are
    returned apart so that a test can change them first.

    Partition 0: a0 x0 [commit] y0 [abort] z0 [commit] w0 [abort] a3
    Partition 1: a1 x1 [commit] y1 [abort] z1 [commit] c0 [commit]
    (offsets 0.. in that order; [..] are control markers)."""
    history = TxnHistory(clock=itertools.count().__next__)
    history.send("p1", "a0", 0, outcome="ok", offset=0)
    history.send("p1", "a1", 1, outcome="ok", offset=0)
    history.send("p1", "a2", 0, outcome="info")  # timed out, never written: allowed
    history.send("t1", "x0", 0, outcome="ok", txn="t1-1", offset=1)
    history.send("t1", "x1", 1, outcome="ok", txn="t1-1", offset=1)
    history.end_txn("t1", "t1-1", end="commit", outcome="ok")
    history.send("t1", "y0", 0, outcome="ok", txn="t1-2", offset=3)
    history.send("t1", "y1", 1, outcome="ok", txn="t1-2")  # the client did not learn the offset
    history.end_txn("t1", "t1-2", end="abort", outcome="ok")
    history.send("t1", "z0", 0, outcome="ok", txn="t1-3", offset=5)
    history.send("t1", "z1", 1, outcome="ok", txn="t1-3", offset=5)
    history.end_txn("t1", "t1-3", end="commit", outcome="info")  # ambiguous; committed after all
    history.send("t1", "w0", 0, outcome="ok", txn="t1-4", offset=7)
    history.end_txn("t1", "t1-4", end="commit", outcome="fail")  # ambiguous; aborted after all
    history.send("p1", "a3", 0, outcome="ok", offset=9)
    # read_committed: no aborted records, and gaps at control markers.
    history.poll("c1", "c1-s1", [(0, 0, "a0"), (1, 0, "a1"), (0, 1, "x0"), (1, 1, "x1")], isolation=READ_COMMITTED)
    history.poll("c1", "c1-s1", [(0, 5, "z0"), (1, 5, "z1"), (0, 9, "a3")], isolation=READ_COMMITTED)
    # read_uncommitted: aborted records too.
    partition_0 = [(0, 0, "a0"), (0, 1, "x0"), (0, 3, "y0"), (0, 5, "z0"), (0, 7, "w0"), (0, 9, "a3")]
    history.poll("c2", "c2-s1", partition_0, isolation=READ_UNCOMMITTED)
    history.poll("c2", "c2-s1", [(1, 0, "a1"), (1, 1, "x1"), (1, 3, "y1"), (1, 5, "z1")], isolation=READ_UNCOMMITTED)
    # A consume-transform-produce copier.
    history.poll("k1", "k1-s1", [(0, 0, "a0"), (0, 1, "x0")], isolation=READ_COMMITTED, txn="k1-1")
    history.send("k1", "c0", 1, outcome="ok", txn="k1-1", offset=7)
    history.end_txn("k1", "k1-1", end="commit", outcome="ok")
    committed = [
        (0, 0, "a0"), (0, 1, "x0"), (0, 5, "z0"), (0, 9, "a3"),
        (1, 0, "a1"), (1, 1, "x1"), (1, 5, "z1"), (1, 7, "c0"),
    ]
    aborted = [(0, 3, "y0"), (0, 7, "w0"), (1, 3, "y1")]
    return history, {READ_COMMITTED: committed, READ_UNCOMMITTED: committed + aborted}


def add(finals: FinalReads, *records: Record, isolations: tuple[str, ...] = (READ_COMMITTED, READ_UNCOMMITTED)) -> None:
    for isolation in isolations:
        finals[isolation].extend(records)


def without(finals: FinalReads, *values: str) -> FinalReads:
    return {
        isolation: [record for record in records if record[2] not in values] for isolation, records in finals.items()
    }


def transaction_over_both_partitions(history: TxnHistory, *, commit_outcome: str) -> None:
    """t2-1: u0 at 0@10, u1 at 1@10, then its commit call."""
    history.send("t2", "u0", 0, outcome="ok", txn="t2-1", offset=10)
    history.send("t2", "u1", 1, outcome="ok", txn="t2-1", offset=10)
    history.end_txn("t2", "t2-1", end="commit", outcome=commit_outcome)


def checked(history: TxnHistory, finals: FinalReads) -> Report:
    for isolation, records in finals.items():
        history.final(sorted(records), isolation=isolation)
    return history.check()


def test_a_clean_mixed_history_has_no_findings():
    report = checked(*clean_history())
    assert report.findings == [], report.details()
    assert report.txns == {Fate.COMMITTED: 2, Fate.ABORTED: 1, Fate.AMBIGUOUS: 2}
    assert (report.sends, report.polls, report.final_records) == (12, 5, 8)
    assert report.summary().endswith("G1c=0 nonmonotonic-poll=0 skipping-poll=0 phantom=0")


def test_an_acknowledged_write_missing_from_the_final_read_is_lost():
    history, finals = clean_history()
    report = checked(history, without(finals, "a3"))
    assert report.kinds() == {Kind.LOST_WRITE}
    [finding] = report.findings
    assert finding.values == ("a3",) and finding.processes == ("p1",)


def test_a_committed_transaction_missing_from_the_final_read_is_lost():
    history, finals = clean_history()
    report = checked(history, without(finals, "x0", "x1"))
    assert report.kinds() == {Kind.LOST_WRITE}
    assert {finding.values for finding in report.findings} == {("x0",), ("x1",)}
    assert all(finding.txns == ("t1-1",) for finding in report.findings)


def test_an_ambiguous_transaction_read_committed_but_missing_from_the_final_read_is_lost():
    # t1-3's commit timed out; read_committed readers saw it, so it committed.
    history, finals = clean_history()
    report = checked(history, without(finals, "z0", "z1"))
    assert report.kinds() == {Kind.LOST_WRITE}
    assert report.count(Kind.LOST_WRITE) == 2
    assert all("c1 read it" in finding.text for finding in report.findings)


def test_a_value_at_two_positions_is_a_duplicate():
    history, finals = clean_history()
    add(finals, (1, 9, "a0"))  # twice in the log
    history.poll("c3", "c3-s1", [(1, 11, "x1")], isolation=READ_COMMITTED)  # twice in polls
    report = checked(history, finals)
    assert report.kinds() == {Kind.DUPLICATE}
    assert {finding.values: finding.positions for finding in report.findings} == {
        ("a0",): ((0, 0), (1, 9)),
        ("x1",): ((1, 1), (1, 11)),
    }


def test_a_value_read_elsewhere_than_acknowledged_has_inconsistent_offsets():
    history, finals = clean_history()
    history.send("p1", "a4", 0, outcome="ok", offset=10)
    add(finals, (0, 11, "a4"))
    report = checked(history, finals)
    assert report.kinds() == {Kind.INCONSISTENT_OFFSETS}
    [finding] = report.findings
    assert finding.values == ("a4",) and finding.positions == ((0, 10), (0, 11))


def test_reads_that_disagree_on_an_offset_have_inconsistent_offsets():
    # c3 reads x0 and z0 swapped: each offset holds two values, each value
    # is at two offsets.
    history, finals = clean_history()
    history.poll("c3", "c3-s1", [(0, 1, "z0"), (0, 5, "x0")], isolation=READ_COMMITTED)
    report = checked(history, finals)
    assert report.kinds() == {Kind.INCONSISTENT_OFFSETS, Kind.DUPLICATE}
    inconsistent = [finding for finding in report.findings if finding.kind is Kind.INCONSISTENT_OFFSETS]
    assert sorted(finding.positions for finding in inconsistent) == [((0, 1),), ((0, 5),)]
    assert all("c3" in finding.processes for finding in inconsistent)


def test_reading_an_aborted_transaction_committed_is_an_aborted_read():
    history, finals = clean_history()
    history.poll("c3", "c3-s1", [(0, 1, "x0"), (0, 3, "y0"), (0, 5, "z0")], isolation=READ_COMMITTED)
    report = checked(history, finals)
    assert report.kinds() == {Kind.ABORTED_READ}
    [finding] = report.findings
    assert (finding.values, finding.txns, finding.processes) == (("y0",), ("t1-2",), ("t1", "c3"))


def test_a_failed_send_in_the_log_is_an_aborted_read():
    history, finals = clean_history()
    history.send("p1", "f0", 0, outcome="fail")
    add(finals, (0, 10, "f0"))
    report = checked(history, finals)
    assert report.kinds() == {Kind.ABORTED_READ}
    [finding] = report.findings
    assert finding.values == ("f0",) and finding.processes == ("p1", "final")


def test_an_ambiguous_transaction_partly_in_the_final_read_is_torn():
    history, finals = clean_history()
    transaction_over_both_partitions(history, commit_outcome="info")
    add(finals, (0, 10, "u0"))
    report = checked(history, finals)
    assert report.kinds() == {Kind.TORN_TRANSACTION}
    [finding] = report.findings
    assert finding.txns == ("t2-1",) and "'u1'" in finding.text


def test_a_committed_transaction_partly_in_the_final_read_is_torn_and_lost():
    history, finals = clean_history()
    transaction_over_both_partitions(history, commit_outcome="ok")
    add(finals, (0, 10, "u0"))
    report = checked(history, finals)
    assert report.kinds() == {Kind.TORN_TRANSACTION, Kind.LOST_WRITE}
    assert [finding.values for finding in report.findings if finding.kind is Kind.LOST_WRITE] == [("u1",)]


def test_a_session_that_polled_past_part_of_a_transaction_it_read_is_torn():
    # The log is right; c3 returned u1 but stepped over u0 (which is also a
    # skipping poll: the final read holds u0).
    history, finals = clean_history()
    transaction_over_both_partitions(history, commit_outcome="ok")
    history.send("p1", "a5", 0, outcome="ok", offset=12)
    add(finals, (0, 10, "u0"), (1, 10, "u1"), (0, 12, "a5"))
    history.poll("c3", "c3-s1", [(1, 10, "u1"), (0, 9, "a3"), (0, 12, "a5")], isolation=READ_COMMITTED)
    report = checked(history, finals)
    assert report.kinds() == {Kind.TORN_TRANSACTION, Kind.SKIPPING_POLL}
    [torn] = [finding for finding in report.findings if finding.kind is Kind.TORN_TRANSACTION]
    assert torn.txns == ("t2-1",) and torn.positions == ((0, 10),) and torn.processes == ("c3", "t2")


def test_reading_a_transaction_before_its_commit_is_a_precommitted_read():
    history, finals = clean_history()
    history.send("t2", "u0", 0, outcome="ok", txn="t2-1", offset=10)
    history.poll("c3", "c3-s1", [(0, 10, "u0")], isolation=READ_COMMITTED)
    history.poll("c4", "c4-s1", [(0, 10, "u0")], isolation=READ_UNCOMMITTED)  # allowed
    history.end_txn("t2", "t2-1", end="commit", outcome="ok")
    add(finals, (0, 10, "u0"))
    report = checked(history, finals)
    assert report.kinds() == {Kind.PRECOMMITTED_READ}
    [finding] = report.findings
    assert finding.txns == ("t2-1",) and finding.processes == ("t2", "c3")


def test_reading_a_transaction_never_committed_is_a_precommitted_read():
    # t2 stopped before committing t2-2; the broker aborted it on timeout.
    history, finals = clean_history()
    history.send("t2", "v0", 0, outcome="ok", txn="t2-2", offset=10)
    history.poll("c3", "c3-s1", [(0, 10, "v0")], isolation=READ_COMMITTED)
    add(finals, (0, 10, "v0"), isolations=(READ_UNCOMMITTED,))
    report = checked(history, finals)
    assert report.kinds() == {Kind.PRECOMMITTED_READ}
    assert "no commit was ever called" in report.findings[0].text


def test_a_session_going_back_is_a_nonmonotonic_poll():
    history, finals = clean_history()
    history.poll("c3", "c3-s1", [(0, 5, "z0"), (0, 9, "a3")], isolation=READ_COMMITTED)
    history.poll("c3", "c3-s1", [(0, 1, "x0")], isolation=READ_COMMITTED)
    history.poll("c3", "c3-s2", [(0, 0, "a0")], isolation=READ_COMMITTED)  # a new session starts anywhere
    report = checked(history, finals)
    assert report.kinds() == {Kind.NONMONOTONIC_POLL}
    [finding] = report.findings
    assert finding.positions == ((0, 9), (0, 1)) and finding.processes == ("c3",)


def test_a_session_passing_over_a_record_is_a_skipping_poll():
    history, finals = clean_history()
    history.poll("c3", "c3-s1", [(0, 0, "a0"), (0, 5, "z0")], isolation=READ_COMMITTED)  # over x0
    # Over y0: aborted, but read_uncommitted readers see it.
    history.poll("c4", "c4-s1", [(0, 1, "x0"), (0, 5, "z0")], isolation=READ_UNCOMMITTED)
    report = checked(history, finals)
    assert report.kinds() == {Kind.SKIPPING_POLL}
    assert sorted((finding.processes, finding.positions) for finding in report.findings) == [
        (("c3",), ((0, 1),)),
        (("c4",), ((0, 3),)),
    ]


def test_a_value_no_one_sent_is_a_phantom():
    history, finals = clean_history()
    add(finals, (0, 10, "ghost"))
    report = checked(history, finals)
    assert report.kinds() == {Kind.PHANTOM}
    assert report.findings[0].values == ("ghost",)


def copier_cycle(history: TxnHistory, finals: FinalReads, copiers: int, *, read_records_of_others: bool) -> None:
    """Copier i writes m{i} at offset 0 of partition 2+i in transaction
    k{i}-1, beside a plain record n{i} at offset 1, and polls the next
    copier's partition inside its transaction: that copier's own record, or
    the plain record past it. Then all commit."""
    for i in range(copiers):
        history.send(f"k{i}", f"m{i}", 2 + i, outcome="ok", txn=f"k{i}-1", offset=0)
        history.send("p2", f"n{i}", 2 + i, outcome="ok", offset=1)
        add(finals, (2 + i, 0, f"m{i}"), (2 + i, 1, f"n{i}"))
    for i in range(copiers):
        following = (i + 1) % copiers
        read = (2 + following, 0, f"m{following}") if read_records_of_others else (2 + following, 1, f"n{following}")
        history.poll(f"k{i}", f"k{i}-s1", [read], isolation=READ_COMMITTED, txn=f"k{i}-1")
    for i in range(copiers):
        history.end_txn(f"k{i}", f"k{i}-1", end="commit", outcome="ok")


@pytest.mark.parametrize("copiers", [1, 2, 3])
def test_transactions_that_each_read_past_the_next_ones_open_record_are_a_g1c_cycle(copiers):
    # Each poll returned an offset past another copier's record, so that
    # copier had ended before the poll, hence before the poller committed:
    # around the circle, each transaction committed before itself. No value
    # of a transaction was read, so no precommitted read shows it.
    history, finals = clean_history()
    copier_cycle(history, finals, copiers, read_records_of_others=False)
    report = checked(history, finals)
    assert report.kinds() == {Kind.G1C}
    [finding] = report.findings
    assert sorted(finding.txns) == [f"k{i}-1" for i in range(copiers)]
    assert len(finding.text.split(";")) == copiers


@pytest.mark.parametrize("copiers", [2, 3])
def test_transactions_that_read_each_others_writes_in_a_circle_are_a_g1c_cycle(copiers):
    # Write-read edges only; every such circle also holds reads of a value
    # before its commit was called.
    history, finals = clean_history()
    copier_cycle(history, finals, copiers, read_records_of_others=True)
    report = checked(history, finals)
    assert report.kinds() == {Kind.G1C, Kind.PRECOMMITTED_READ}
    [finding] = [finding for finding in report.findings if finding.kind is Kind.G1C]
    assert sorted(finding.txns) == [f"k{i}-1" for i in range(copiers)]
    assert "read k" in finding.text and "'m" in finding.text


def test_two_transactions_appending_in_opposite_orders_are_no_cycle():
    # Kafka does not isolate transactions' writes: g1 appends to partition 0
    # then 1, g2 to 1 then 0, both commit. A copier reads them all later.
    history, finals = clean_history()
    history.send("g1", "g1a", 0, outcome="ok", txn="g1-1", offset=10)
    history.send("g2", "g2a", 1, outcome="ok", txn="g2-1", offset=10)
    history.send("g1", "g1b", 1, outcome="ok", txn="g1-1", offset=11)
    history.send("g2", "g2b", 0, outcome="ok", txn="g2-1", offset=11)
    history.end_txn("g1", "g1-1", end="commit", outcome="ok")
    history.end_txn("g2", "g2-1", end="commit", outcome="ok")
    both = [(0, 10, "g1a"), (0, 11, "g2b"), (1, 10, "g2a"), (1, 11, "g1b")]
    history.poll("k5", "k5-s1", both, isolation=READ_COMMITTED, txn="k5-1")
    history.send("k5", "k5-out", 0, outcome="ok", txn="k5-1", offset=14)
    history.end_txn("k5", "k5-1", end="commit", outcome="ok")
    add(finals, *both, (0, 14, "k5-out"))
    report = checked(history, finals)
    assert report.findings == [], report.details()


@pytest.mark.parametrize("closed", [False, True])
def test_a_chain_of_10k_copier_transactions(closed):
    # Copier transaction i reads what transaction i-1 wrote: a chain as long
    # as the history, acyclic. Closed: the first one also polled past the
    # last one's record in another partition, which closes the chain; the
    # shortest cycle is shorter, as the last one's poll read past the
    # records of all before it.
    history = TxnHistory(clock=itertools.count().__next__)
    final: list[Record] = []
    length = 10_000
    if closed:
        history.poll("k", "k-s0", [(1, 1, "n")], isolation=READ_COMMITTED, txn="k-0")
        history.send("p", "n", 1, outcome="ok", offset=1)
        final.append((1, 1, "n"))
    for i in range(length):
        if i:
            history.poll("k", "k-s1", [(0, 2 * (i - 1), f"v{i - 1}")], isolation=READ_COMMITTED, txn=f"k-{i}")
        history.send("k", f"v{i}", 0, outcome="ok", txn=f"k-{i}", offset=2 * i)
        history.end_txn("k", f"k-{i}", end="commit", outcome="ok")
        final.append((0, 2 * i, f"v{i}"))
    if closed:
        history.send("k", "last", 1, outcome="ok", txn=f"k-{length - 1}", offset=0)
        final.append((1, 0, "last"))
    history.final(final)
    report = history.check()
    assert report.txns[Fate.COMMITTED] == length
    if closed:
        assert report.kinds() == {Kind.G1C}
        [finding] = report.findings
        assert finding.txns == ("k-1", f"k-{length - 1}", "k-0")
    else:
        assert report.findings == [], report.details()


def command_line(history_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(history_path)], capture_output=True, text=True)


def test_the_command_line_exits_1_on_anomalies_0_without_2_on_a_bad_history(tmp_path):
    history, finals = clean_history()
    checked(history, finals)
    clean = tmp_path / "clean.jsonl"
    history.write_jsonl(clean)
    assert TxnHistory.read_jsonl(clean).events == history.events
    run = command_line(clean)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "lost-write=0" in run.stdout

    history, finals = clean_history()
    checked(history, without(finals, "a3"))
    lost = tmp_path / "lost.jsonl"
    history.write_jsonl(lost)
    run = command_line(lost)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "lost-write=1" in run.stdout and "lost-write: 'a3'" in run.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "send", "process": "p1"}\n')
    run = command_line(bad)
    assert run.returncode == 2 and "bad.jsonl:1" in run.stderr


def test_a_history_that_breaks_its_own_format_is_refused():
    history, _ = clean_history()
    with pytest.raises(HistoryError, match="no final read_committed read"):
        history.check()
    history.final([])
    history.end_txn("t1", "t1-1", end="abort", outcome="ok")
    with pytest.raises(HistoryError, match="both committed and aborted"):
        history.check()
    with pytest.raises(HistoryError, match="outcome"):
        history.send("p1", "b0", 0, outcome="acked")
