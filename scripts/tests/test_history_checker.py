"""The history checker (history.py) finds each kind of problem it names, and
none in a history where nothing went wrong. No broker: histories are built
by hand."""

from __future__ import annotations

from history import History


def history_of(records: int, *, idempotent: bool = True) -> tuple[History, dict]:
    """`records` sends to partition 0, all acknowledged at offsets 0.., and
    the final log that holds exactly them."""
    h = History()
    log = {0: []}
    for i in range(records):
        v = History.value("p", i)
        h.sent("p", i, v, idempotent=idempotent)
        h.acked(v, 0, i)
        log[0].append((i, v))
    return h, log


def kinds(report) -> list[str]:
    return sorted({p.split(":")[0] for p in report.problems})


def test_a_clean_history_has_no_problems():
    h, log = history_of(5)
    h.read(0, 2, History.value("p", 2))
    # Sent, never answered, not written: allowed.
    h.sent("p", 5, History.value("p", 5), idempotent=True)
    h.failed(History.value("p", 5), definite=False)
    report = h.check(log)
    assert report.problems == []
    assert (report.sent, report.acked, report.failed_unknown, report.in_log) == (6, 5, 1, 5)


def test_lost_and_moved_acknowledged_records():
    h, log = history_of(4)
    del log[0][3]  # the tail lost
    log[0][1] = (1, History.value("p", 2))
    log[0][2] = (2, History.value("p", 1))  # two records swapped
    report = h.check(log)
    assert kinds(report) == ["LOST", "MOVED"]
    assert report.count("LOST") == 1 and report.count("MOVED") == 2


def test_duplicates_count_unless_a_plain_client_retried():
    h, log = history_of(3, idempotent=True)
    log[0].append((3, History.value("p", 1)))
    assert kinds(h.check(log)) == ["DUPLICATE"]
    plain, log = history_of(3, idempotent=False)
    log[0].append((3, History.value("p", 1)))
    assert kinds(plain.check(log)) == ["DUPLICATE"], "no retry recorded: a second copy is a bug"
    plain.retried_by_client(History.value("p", 1))
    assert plain.check(log).problems == []


def test_phantoms_in_the_log_and_in_reads():
    h, log = history_of(2)
    log[0].append((2, b"never-sent"))
    h.read(0, 5, b"also-never-sent")
    report = h.check(log)
    assert kinds(report) == ["PHANTOM"]
    assert report.count("PHANTOM") == 2


def test_a_read_the_cluster_later_lost_is_rewritten():
    h, log = history_of(3)
    # A consumer read an unacknowledged record at offset 3 (past a high
    # watermark it should not have passed); the final log lost it.
    h.sent("p", 3, History.value("p", 3), idempotent=True)
    h.failed(History.value("p", 3), definite=False)
    h.read(0, 3, History.value("p", 3))
    assert kinds(h.check(log)) == ["REWRITTEN"]


def test_a_refused_record_must_not_be_in_the_log():
    h, log = history_of(2)
    h.sent("p", 2, History.value("p", 2), idempotent=True)
    h.failed(History.value("p", 2), definite=True)
    log[0].append((2, History.value("p", 2)))
    assert kinds(h.check(log)) == ["FAILED_BUT_WRITTEN"]
