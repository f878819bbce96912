"""The transactional history checker: what producers sent (alone or inside
transactions), how each transaction ended, what consumers polled, and a final
complete read of every partition, compared for the anomalies a Kafka-compatible
broker must never show. Standard library only; `TxnHistory` is also the
recorder the fault tests use to write histories.

History format: JSON lines, one event each, in the order they happened (a
session's polls in the order it made them). Every send has a value no other
send has. A record is [partition, offset, value]; a position, shown as
partition@offset, is (partition, offset). Times are nanoseconds of one clock
every process of the test shares (time.monotonic_ns of the test process).

  {"type": "send", "process": "p1", "value": "p1-17", "partition": 0,
   "outcome": "ok", "txn": null, "offset": 12}
      outcome: "ok" (acknowledged), "fail" (definitely not written) or "info"
      (unknown: a timeout, a lost connection). offset: where the broker put
      the record; only with outcome "ok", and null when the client did not
      learn it. txn: the transaction the send belongs to, or null. A
      transactional send's own outcome decides nothing: its record is
      committed or aborted with its transaction.
  {"type": "txn", "process": "p1", "txn": "p1-t3", "end": "commit",
   "outcome": "ok", "invoke_ns": 5, "complete_ns": 9}
      a call that ended a transaction (end "commit" or "abort") and its
      outcome; a transaction may have several (a commit that timed out, then
      an abort).
  {"type": "poll", "process": "c1", "session": "c1-s1",
   "isolation": "read_committed", "txn": null, "records": [[0, 12, "p1-17"]],
   "invoke_ns": 10, "complete_ns": 11}
      the records one poll returned. A session is one consumer's run over one
      assignment: a consumer that restarts, is reassigned or seeks (a copier
      rewinding after an abort) starts a new session. txn: the transaction a
      consume-transform-produce copier polled inside, or null.
  {"type": "final", "isolation": "read_committed", "records": [...]}
      every record of every partition, read from its start to its end after
      everything else ended: the ground truth. A read_committed final read is
      required; a read_uncommitted one is optional (without it the checks
      that need it are skipped for read_uncommitted polls).

The fate of a send (`Fate`), from its outcome or its transaction's calls:
  - committed: a non-transactional send acknowledged ok, or a send of a
    transaction with a commit call that returned ok;
  - aborted: a non-transactional send that failed, or a send of a transaction
    with an abort call that returned ok;
  - ambiguous: a non-transactional send with outcome info, or a send of a
    transaction whose commit was called but failed or timed out: committed
    or not, the broker decided (all or nothing);
  - never-committed: a send of a transaction no commit call was made for (no
    call at all, or only aborts that did not return ok): it may not become
    visible to read_committed readers.
Neither info sends nor ambiguous transactions are anomalies by themselves.

Anomalies (`Kind`); each finding names the values, positions, transactions
and processes involved (the final read is named "final"):
  - lost-write: a value whose fate is committed but which the final
    read_committed read lacks; or a value a read_committed poll returned
    that the final read_committed read lacks (unless it is one no
    read_committed reader may see: that is an aborted-read or a
    precommitted-read instead); or a value a read_uncommitted poll returned
    that the final read_uncommitted read lacks (unless its
    non-transactional send failed). A value no one sent is a phantom
    instead.
  - duplicate: one value at more than one position, over all polls and final
    reads.
  - inconsistent-offsets: one position holding different values in different
    polls, final reads and acknowledgements; or a value acknowledged at one
    position but read only at others.
  - aborted-read (G1a): a read_committed poll or final read returned a value
    whose fate is aborted; or any read returned a value whose
    non-transactional send failed (without a transaction there are no abort
    markers, so isolation makes no difference).
  - torn-transaction: a transaction that committed or is ambiguous has some
    but not all of its values in the final read_committed read; or a
    read_committed session returned some of a transaction's values and polled
    past another's position (between the lowest and highest offset it
    returned in that partition) without returning it. The position of a
    value is where the final read_committed read has it, else where it was
    acknowledged.
  - precommitted-read: a read_committed poll returned a value of a committed
    or ambiguous transaction and completed before the transaction's first
    commit call was invoked; or a read_committed poll or final read returned
    a value of a never-committed transaction.
  - G1c: a cycle of transactions that committed or are ambiguous, in which
    each one's commit must have preceded the next one's commit. Kafka's
    transactions do not isolate writes (two transactions may append to two
    partitions in opposite orders and both commit), so the order of
    transactions' records in a partition says nothing about the order of
    their commits, and write-write orders alone make no edge. What does: a
    read_committed poll inside transaction R that returned the record at
    partition@offset X shows that every transaction with a record at or
    below X in that partition had ended (the last stable offset had passed
    it) before that poll, hence before R committed. So an edge W -> R when W
    has a record in the final read_committed read at or below an offset R
    read in that partition: a write-read edge when R read W's own record,
    and the write-write order extended by a read otherwise. A value R read
    that the final read lacks (so has no position in it) still makes the
    write-read edge from its transaction. The graph keeps one node per
    position (the prefix of a partition up to it) so it stays linear in the
    history; strongly connected components are found without recursion and,
    for each, the shortest cycle through one of its transactions is
    reported step by step.
  - nonmonotonic-poll: within one session, a partition's offset no greater
    than one the session returned before for that partition.
  - skipping-poll: within one session, two consecutive offsets returned for a
    partition with, between them, an offset the final read of the session's
    isolation holds. Control markers are in no final read, and aborted
    records in no read_committed one, so skipping those is right.
  - phantom: a value read that no send in the history has.

Run on a saved history (exit 0: no anomaly, 1: anomalies, 2: bad history):
    python3 scripts/txn_history_check.py history.jsonl
"""

from __future__ import annotations

import json
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

Position = tuple[int, int]  # (partition, offset)
Record = tuple[int, int, str]  # (partition, offset, value)

READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"
ISOLATIONS = (READ_COMMITTED, READ_UNCOMMITTED)
OUTCOMES = ("ok", "fail", "info")
ENDS = ("commit", "abort")
FINAL_READER = "final"
# A finding's text lists this many offsets, values or readers, then counts the rest.
SHOWN = 5


class Kind(StrEnum):
    LOST_WRITE = "lost-write"
    DUPLICATE = "duplicate"
    INCONSISTENT_OFFSETS = "inconsistent-offsets"
    ABORTED_READ = "aborted-read"
    TORN_TRANSACTION = "torn-transaction"
    PRECOMMITTED_READ = "precommitted-read"
    G1C = "G1c"
    NONMONOTONIC_POLL = "nonmonotonic-poll"
    SKIPPING_POLL = "skipping-poll"
    PHANTOM = "phantom"


class Fate(StrEnum):
    COMMITTED = "committed"
    ABORTED = "aborted"
    AMBIGUOUS = "ambiguous"
    NEVER_COMMITTED = "never-committed"


# Transactions whose records may be visible to read_committed readers.
MAY_COMMIT = (Fate.COMMITTED, Fate.AMBIGUOUS)
FATE_OF_OUTCOME = {"ok": Fate.COMMITTED, "fail": Fate.ABORTED, "info": Fate.AMBIGUOUS}


class HistoryError(ValueError):
    """The history breaks its own format: a bug of the test, not of the broker."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise HistoryError(message)


@dataclass(frozen=True)
class Send:
    process: str
    value: str
    partition: int
    outcome: str
    txn: str | None = None
    offset: int | None = None

    def __post_init__(self) -> None:
        _require(self.outcome in OUTCOMES, f"send {self.value!r}: outcome {self.outcome!r} is not one of {OUTCOMES}")
        _require(self.offset is None or self.outcome == "ok", f"send {self.value!r}: an offset needs outcome ok")


@dataclass(frozen=True)
class EndTxn:
    process: str
    txn: str
    end: str
    outcome: str
    invoke_ns: int
    complete_ns: int

    def __post_init__(self) -> None:
        _require(self.end in ENDS, f"txn {self.txn!r}: end {self.end!r} is not one of {ENDS}")
        _require(self.outcome in OUTCOMES, f"txn {self.txn!r}: outcome {self.outcome!r} is not one of {OUTCOMES}")


@dataclass(frozen=True)
class Poll:
    process: str
    session: str
    isolation: str
    records: tuple[Record, ...]
    invoke_ns: int
    complete_ns: int
    txn: str | None = None

    def __post_init__(self) -> None:
        _require(self.isolation in ISOLATIONS, f"poll of {self.session!r}: isolation {self.isolation!r}")


@dataclass(frozen=True)
class FinalRead:
    isolation: str
    records: tuple[Record, ...]

    def __post_init__(self) -> None:
        _require(self.isolation in ISOLATIONS, f"final read: isolation {self.isolation!r}")


Event = Send | EndTxn | Poll | FinalRead
TYPE_OF_EVENT: dict[type, str] = {Send: "send", EndTxn: "txn", Poll: "poll", FinalRead: "final"}
EVENT_OF_TYPE = {name: event_class for event_class, name in TYPE_OF_EVENT.items()}


def event_to_json(event: Event) -> dict[str, Any]:
    return {"type": TYPE_OF_EVENT[type(event)], **asdict(event)}


def event_from_json(fields: dict[str, Any]) -> Event:
    event_type = fields.get("type")
    event_class = EVENT_OF_TYPE.get(event_type) if isinstance(event_type, str) else None
    if event_class is None:
        raise HistoryError(f"unknown event type {event_type!r}")
    arguments = {name: value for name, value in fields.items() if name != "type"}
    try:
        if "records" in arguments:
            arguments["records"] = tuple((int(p), int(o), str(v)) for p, o, v in arguments["records"])
        return event_class(**arguments)
    except (TypeError, ValueError) as error:
        raise HistoryError(f"{event_type} event: {error}") from None


class TxnHistory:
    """A test's events as they happen: clients on several threads may share
    one. Times not given are taken from `clock` when the event is recorded,
    so hand-made histories are ordered as written."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self._events: list[Event] = []
        self._lock = threading.Lock()

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def record(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def send(
        self, process: str, value: str, partition: int, *, outcome: str, txn: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.record(Send(process, value, partition, outcome, txn, offset))

    def end_txn(
        self, process: str, txn: str, *, end: str, outcome: str, invoke_ns: int | None = None,
        complete_ns: int | None = None,
    ) -> None:
        """invoke_ns: `clock()` taken before the call; both times default to now."""
        complete = self.clock() if complete_ns is None else complete_ns
        self.record(EndTxn(process, txn, end, outcome, complete if invoke_ns is None else invoke_ns, complete))

    def poll(
        self, process: str, session: str, records: Iterable[Record], *, isolation: str,
        txn: str | None = None, invoke_ns: int | None = None, complete_ns: int | None = None,
    ) -> None:
        """invoke_ns: `clock()` taken before the call; both times default to now."""
        complete = self.clock() if complete_ns is None else complete_ns
        start = complete if invoke_ns is None else invoke_ns
        self.record(Poll(process, session, isolation, tuple(records), start, complete, txn))

    def final(self, records: Iterable[Record], *, isolation: str = READ_COMMITTED) -> None:
        self.record(FinalRead(isolation, tuple(records)))

    def write_jsonl(self, path: str | Path) -> None:
        with open(path, "w") as out:
            for event in self.events:
                out.write(json.dumps(event_to_json(event)) + "\n")

    @classmethod
    def read_jsonl(cls, path: str | Path) -> TxnHistory:
        history = cls()
        with open(path) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    history.record(event_from_json(json.loads(line)))
                except (HistoryError, json.JSONDecodeError) as error:
                    raise HistoryError(f"{path}:{number}: {error}") from None
        return history

    def check(self) -> Report:
        return check(self.events)


@dataclass(frozen=True)
class Finding:
    kind: Kind
    text: str
    processes: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    positions: tuple[Position, ...] = ()
    txns: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}: {self.text} (processes: {', '.join(self.processes)})"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    sends: int = 0
    txns: Counter[Fate] = field(default_factory=Counter)
    polls: int = 0
    polled_records: int = 0
    final_records: int = 0  # in the final read_committed read

    def count(self, kind: Kind) -> int:
        return sum(1 for finding in self.findings if finding.kind is kind)

    def kinds(self) -> set[Kind]:
        return {finding.kind for finding in self.findings}

    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        txns = " ".join(f"{fate}={self.txns[fate]}" for fate in Fate)
        found = " ".join(f"{kind}={self.count(kind)}" for kind in Kind)
        return (
            f"sends={self.sends} txns: {txns} polls={self.polls} polled_records={self.polled_records} "
            f"final_records={self.final_records} | {found}"
        )

    def details(self, per_kind: int = 20) -> list[str]:
        """The findings, at most `per_kind` of each kind."""
        lines = []
        for kind in Kind:
            of_kind = [finding for finding in self.findings if finding.kind is kind]
            lines += [str(finding) for finding in of_kind[:per_kind]]
            if len(of_kind) > per_kind:
                lines.append(f"{kind}: and {len(of_kind) - per_kind} more")
        return lines


def check(events: Iterable[Event]) -> Report:
    index = _Index(events)
    findings = [
        *_lost_writes(index),
        *_offset_findings(index),
        *_aborted_reads(index),
        *_torn_transactions(index),
        *_precommitted_reads(index),
        *_g1c_cycles(index),
        *_poll_order(index),
        *_phantoms(index),
    ]
    return Report(
        findings=findings,
        sends=len(index.sends),
        txns=Counter(index.txn_fate.values()),
        polls=len(index.polls),
        polled_records=sum(len(poll.records) for poll in index.polls),
        final_records=len(index.final_at[READ_COMMITTED]),
    )


def _at(position: Position) -> str:
    return f"{position[0]}@{position[1]}"


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown if len(items) <= SHOWN else f"{shown} and {len(items) - SHOWN} more"


def _unique(*names: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


class _Read(NamedTuple):
    process: str
    isolation: str
    records: tuple[Record, ...]
    complete_ns: int | None  # None for a final read, after everything


class _Index:
    """The history arranged for the checks."""

    def __init__(self, events: Iterable[Event]) -> None:
        self.sends: dict[str, Send] = {}
        self.values_of_txn: dict[str, list[str]] = defaultdict(list)
        self.process_of_txn: dict[str, str] = {}
        ends: dict[str, list[EndTxn]] = defaultdict(list)
        self.polls: list[Poll] = []
        self.finals: list[FinalRead] = []
        self.final_at: dict[str, dict[Position, str]] = {}
        isolation_of_session: dict[str, str] = {}
        for event in events:
            if isinstance(event, Send):
                _require(event.value not in self.sends, f"value {event.value!r} sent twice by the test")
                self.sends[event.value] = event
                if event.txn is not None:
                    self.values_of_txn[event.txn].append(event.value)
                    self.process_of_txn.setdefault(event.txn, event.process)
            elif isinstance(event, EndTxn):
                ends[event.txn].append(event)
                self.process_of_txn.setdefault(event.txn, event.process)
            elif isinstance(event, Poll):
                isolation = isolation_of_session.setdefault(event.session, event.isolation)
                _require(isolation == event.isolation, f"session {event.session!r} polls at two isolations")
                self.polls.append(event)
            else:
                self.finals.append(event)
                at = self.final_at.setdefault(event.isolation, {})
                for partition, offset, value in event.records:
                    at[(partition, offset)] = value
        _require(READ_COMMITTED in self.final_at, "the history has no final read_committed read")
        self.final_where = {
            isolation: {value: position for position, value in at.items()} for isolation, at in self.final_at.items()
        }
        self.final_offsets: dict[str, dict[int, list[int]]] = {}
        for isolation, at in self.final_at.items():
            offsets: dict[int, list[int]] = defaultdict(list)
            for partition, offset in sorted(at):
                offsets[partition].append(offset)
            self.final_offsets[isolation] = offsets
        self.txn_fate = {txn: _fate_of_txn(txn, ends.get(txn, [])) for txn in self.values_of_txn.keys() | ends.keys()}
        self.first_commit_invoke = {
            txn: min(call.invoke_ns for call in calls if call.end == "commit")
            for txn, calls in ends.items()
            if any(call.end == "commit" for call in calls)
        }

    def reads(self) -> Iterator[_Read]:
        for poll in self.polls:
            yield _Read(poll.process, poll.isolation, poll.records, poll.complete_ns)
        for final in self.finals:
            yield _Read(FINAL_READER, final.isolation, final.records, None)

    def txn_of(self, value: str) -> str | None:
        send = self.sends.get(value)
        return None if send is None else send.txn

    def fate(self, value: str) -> Fate | None:
        """None for a value no one sent."""
        send = self.sends.get(value)
        if send is None:
            return None
        return FATE_OF_OUTCOME[send.outcome] if send.txn is None else self.txn_fate[send.txn]

    def must_not_read(self, value: str, isolation: str) -> bool:
        """Whether no reader at `isolation` may ever see `value` (False for a
        value no one sent: that is a phantom)."""
        send = self.sends.get(value)
        if send is None:
            return False
        fate = self.fate(value)
        if isolation == READ_COMMITTED:
            return fate in (Fate.ABORTED, Fate.NEVER_COMMITTED)
        return send.txn is None and fate is Fate.ABORTED

    def position_of(self, value: str) -> Position | None:
        """Where the final read_committed read has `value`, else where it was acknowledged."""
        position = self.final_where[READ_COMMITTED].get(value)
        if position is not None:
            return position
        send = self.sends[value]
        return None if send.offset is None else (send.partition, send.offset)


def _fate_of_txn(txn: str, calls: list[EndTxn]) -> Fate:
    definite = {call.end for call in calls if call.outcome == "ok"}
    _require(len(definite) < 2, f"transaction {txn!r} both committed and aborted ok")
    if "commit" in definite:
        return Fate.COMMITTED
    if "abort" in definite:
        return Fate.ABORTED
    if any(call.end == "commit" for call in calls):
        return Fate.AMBIGUOUS
    return Fate.NEVER_COMMITTED


def _lost_writes(index: _Index) -> Iterator[Finding]:
    # value -> (the final read it is missing from, why it must be there, who says so)
    lost: dict[str, tuple[str, str, str]] = {}
    final = index.final_where[READ_COMMITTED]
    for send in index.sends.values():
        if send.value not in final and index.fate(send.value) is Fate.COMMITTED:
            why = "it was acknowledged" if send.txn is None else f"its transaction {send.txn} committed"
            lost[send.value] = (READ_COMMITTED, why, send.process)
    for poll in index.polls:
        final_of_isolation = index.final_where.get(poll.isolation)
        if final_of_isolation is None:
            continue
        for partition, offset, value in poll.records:
            if (
                value in final_of_isolation
                or value in lost
                or value not in index.sends
                or index.must_not_read(value, poll.isolation)
            ):
                continue
            why = f"{poll.process} read it at {_at((partition, offset))} ({poll.isolation})"
            lost[value] = (poll.isolation, why, poll.process)
    for value, (isolation, why, process) in lost.items():
        yield Finding(
            Kind.LOST_WRITE,
            f"{value!r} is not in the final {isolation} read, but {why}",
            processes=_unique(index.sends[value].process, process),
            values=(value,),
            txns=tuple(filter(None, [index.txn_of(value)])),
        )


K = TypeVar("K")
T = TypeVar("T")


class _Sightings(Generic[K, T]):
    """The distinct things seen with each key, each with who saw it first.
    Almost every key has one, so only the rest take a dict of their own."""

    def __init__(self) -> None:
        self.first: dict[K, tuple[T, str]] = {}
        self.more: dict[K, dict[T, str]] = {}

    def add(self, key: K, thing: T, seer: str) -> None:
        seen = self.first.get(key)
        if seen is None:
            self.first[key] = (thing, seer)
        elif seen[0] != thing:
            self.more.setdefault(key, {}).setdefault(thing, seer)

    def of(self, key: K) -> dict[T, str]:
        seen = self.first.get(key)
        return {} if seen is None else {seen[0]: seen[1], **self.more.get(key, {})}

    def conflicts(self) -> Iterator[tuple[K, dict[T, str]]]:
        for key in self.more:
            yield key, self.of(key)


def _offset_findings(index: _Index) -> Iterator[Finding]:
    where: _Sightings[str, Position] = _Sightings()
    what: _Sightings[Position, str] = _Sightings()
    for read in index.reads():
        for partition, offset, value in read.records:
            where.add(value, (partition, offset), read.process)
            what.add((partition, offset), value, read.process)
    for send in index.sends.values():
        if send.offset is None:
            continue
        acked_at = (send.partition, send.offset)
        what.add(acked_at, send.value, send.process)
        read_at = where.of(send.value)
        if read_at and acked_at not in read_at:
            yield Finding(
                Kind.INCONSISTENT_OFFSETS,
                f"{send.value!r} was acknowledged at {_at(acked_at)} but read at "
                + _some([f"{_at(position)} (by {reader})" for position, reader in read_at.items()]),
                processes=_unique(send.process, *read_at.values()),
                values=(send.value,),
                positions=(acked_at, *read_at),
            )
    for value, positions in where.conflicts():
        yield Finding(
            Kind.DUPLICATE,
            f"{value!r} is at {len(positions)} positions: "
            + _some([f"{_at(position)} (read by {reader})" for position, reader in positions.items()]),
            processes=_unique(*positions.values()),
            values=(value,),
            positions=tuple(positions),
        )
    for position, values in what.conflicts():
        yield Finding(
            Kind.INCONSISTENT_OFFSETS,
            f"{_at(position)} holds {len(values)} values: "
            + _some([f"{value!r} (per {seer})" for value, seer in values.items()]),
            processes=_unique(*values.values()),
            values=tuple(values),
            positions=(position,),
        )


def _aborted_reads(index: _Index) -> Iterator[Finding]:
    readers: dict[str, dict[str, Position]] = {}  # value -> reader -> where it read it first
    for read in index.reads():
        for partition, offset, value in read.records:
            if index.fate(value) is Fate.ABORTED and index.must_not_read(value, read.isolation):
                readers.setdefault(value, {}).setdefault(read.process, (partition, offset))
    for value, seen in readers.items():
        send = index.sends[value]
        why = "its send failed" if send.txn is None else f"its transaction {send.txn} aborted"
        yield Finding(
            Kind.ABORTED_READ,
            f"{value!r} ({why}) was read by "
            + _some([f"{reader} at {_at(position)}" for reader, position in seen.items()]),
            processes=_unique(send.process, *seen),
            values=(value,),
            positions=tuple(dict.fromkeys(seen.values())),
            txns=tuple(filter(None, [send.txn])),
        )


def _torn_transactions(index: _Index) -> Iterator[Finding]:
    final = index.final_where[READ_COMMITTED]
    for txn, values in index.values_of_txn.items():
        if index.txn_fate[txn] not in MAY_COMMIT:
            continue
        missing = [value for value in values if value not in final]
        if 0 < len(missing) < len(values):
            yield Finding(
                Kind.TORN_TRANSACTION,
                f"transaction {txn} ({index.txn_fate[txn]}) has {len(values) - len(missing)} of its "
                f"{len(values)} values in the final read_committed read; missing: {_some([repr(v) for v in missing])}",
                processes=(index.process_of_txn[txn],),
                values=tuple(values),
                txns=(txn,),
            )
    yield from _torn_in_sessions(index)


@dataclass
class _Session:
    process: str
    seen: set[str] = field(default_factory=set)
    # partition -> [lowest, highest] offset the session returned
    spans: dict[int, list[int]] = field(default_factory=dict)


def _torn_in_sessions(index: _Index) -> Iterator[Finding]:
    sessions: dict[str, _Session] = {}
    # txn -> the sessions that returned any of its values, in the order they first did
    sessions_of_txn: dict[str, dict[str, None]] = defaultdict(dict)
    for poll in index.polls:
        if poll.isolation != READ_COMMITTED:
            continue
        session = sessions.setdefault(poll.session, _Session(poll.process))
        for partition, offset, value in poll.records:
            session.seen.add(value)
            span = session.spans.setdefault(partition, [offset, offset])
            span[0], span[1] = min(span[0], offset), max(span[1], offset)
            txn = index.txn_of(value)
            if txn is not None and index.txn_fate[txn] in MAY_COMMIT:
                sessions_of_txn[txn][poll.session] = None
    for txn, names in sessions_of_txn.items():
        for name in names:
            session = sessions[name]
            passed: list[tuple[str, Position]] = []
            for value in index.values_of_txn[txn]:
                position = index.position_of(value)
                if value in session.seen or position is None:
                    continue
                span = session.spans.get(position[0])
                if span is not None and span[0] <= position[1] <= span[1]:
                    passed.append((value, position))
            if passed:
                read = [value for value in index.values_of_txn[txn] if value in session.seen]
                yield Finding(
                    Kind.TORN_TRANSACTION,
                    f"session {name} returned {_some([repr(v) for v in read])} of transaction {txn} but polled "
                    f"past {_some([f'{v!r} at {_at(p)}' for v, p in passed])} without returning it",
                    processes=_unique(session.process, index.process_of_txn[txn]),
                    values=tuple(read) + tuple(value for value, _ in passed),
                    positions=tuple(position for _, position in passed),
                    txns=(txn,),
                )


def _precommitted_reads(index: _Index) -> Iterator[Finding]:
    # txn -> reader -> (the first value it read too early, where, when its read completed)
    early: dict[str, dict[str, tuple[str, Position, int | None]]] = {}
    for read in index.reads():
        if read.isolation != READ_COMMITTED:
            continue
        for partition, offset, value in read.records:
            txn = index.txn_of(value)
            if txn is None:
                continue
            fate = index.txn_fate[txn]
            before_commit = (
                fate in MAY_COMMIT
                and read.complete_ns is not None
                and read.complete_ns < index.first_commit_invoke[txn]
            )
            if fate is Fate.NEVER_COMMITTED or before_commit:
                early.setdefault(txn, {}).setdefault(read.process, (value, (partition, offset), read.complete_ns))
    for txn, readers in early.items():
        if index.txn_fate[txn] is Fate.NEVER_COMMITTED:
            why = "no commit was ever called for it"
        else:
            why = f"its first commit call was invoked at {index.first_commit_invoke[txn]}"
        reads = [
            f"{reader} read {value!r} at {_at(position)}"
            + ("" if complete_ns is None else f" in a poll that completed at {complete_ns}")
            for reader, (value, position, complete_ns) in readers.items()
        ]
        yield Finding(
            Kind.PRECOMMITTED_READ,
            f"transaction {txn}: {_some(reads)}; {why}",
            processes=_unique(index.process_of_txn[txn], *readers),
            values=tuple(dict.fromkeys(value for value, _, _ in readers.values())),
            positions=tuple(dict.fromkeys(position for _, position, _ in readers.values())),
            txns=(txn,),
        )


class _DependencyGraph:
    """Nodes: the transactions that may have committed, and, for each
    partition some such transaction polled at read_committed, one node per
    position of the final read_committed read up to the furthest one polled,
    standing for "everything up to here had ended". Edges: a position to the
    next one in its partition; a transaction to each position it wrote; a
    position to each transaction whose poll returned it as the furthest in its
    partition; a writer straight to a reader for a value read that the final
    read lacks."""

    def __init__(self, index: _Index) -> None:
        self.index = index
        self.adjacency: list[list[int]] = []
        self.txn_at_node: list[str | None] = []
        self.position_at_node: list[Position | None] = []
        self.node_of_txn: dict[str, int] = {}
        self.node_of_position: dict[Position, int] = {}
        self.read_off_final: dict[tuple[int, int], tuple[str, Position]] = {}  # (writer, reader) -> value, where
        final_at = index.final_at[READ_COMMITTED]
        furthest: dict[tuple[str, int], int] = {}  # (reader txn, partition) -> furthest offset it polled
        for poll in index.polls:
            if poll.txn is None or poll.isolation != READ_COMMITTED or index.txn_fate.get(poll.txn) not in MAY_COMMIT:
                continue
            for partition, offset, value in poll.records:
                if (partition, offset) in final_at:
                    key = (poll.txn, partition)
                    furthest[key] = max(furthest.get(key, offset), offset)
                    continue
                writer = index.txn_of(value)
                if writer is not None and index.txn_fate[writer] in MAY_COMMIT:
                    edge = (self._txn_node(writer), self._txn_node(poll.txn))
                    if edge not in self.read_off_final:
                        self.read_off_final[edge] = (value, (partition, offset))
                        self.adjacency[edge[0]].append(edge[1])
        furthest_in_partition: dict[int, int] = {}
        for (_, partition), offset in furthest.items():
            furthest_in_partition[partition] = max(furthest_in_partition.get(partition, offset), offset)
        for partition, last in furthest_in_partition.items():
            offsets = index.final_offsets[READ_COMMITTED][partition]
            previous: int | None = None
            for offset in offsets[: bisect_right(offsets, last)]:
                node = self._position_node((partition, offset))
                if previous is not None:
                    self.adjacency[previous].append(node)
                writer = index.txn_of(final_at[(partition, offset)])
                if writer is not None and index.txn_fate[writer] in MAY_COMMIT:
                    self.adjacency[self._txn_node(writer)].append(node)
                previous = node
        for (reader, partition), offset in furthest.items():
            self.adjacency[self.node_of_position[(partition, offset)]].append(self._txn_node(reader))

    def _new_node(self, txn: str | None, position: Position | None) -> int:
        self.adjacency.append([])
        self.txn_at_node.append(txn)
        self.position_at_node.append(position)
        return len(self.adjacency) - 1

    def _txn_node(self, txn: str) -> int:
        if txn not in self.node_of_txn:
            self.node_of_txn[txn] = self._new_node(txn, None)
        return self.node_of_txn[txn]

    def _position_node(self, position: Position) -> int:
        self.node_of_position[position] = self._new_node(None, position)
        return self.node_of_position[position]

    def cycles(self) -> Iterator[list[int]]:
        """For each strongly connected component that has a cycle, the
        shortest cycle through one of its transactions (first node repeated
        last)."""
        for component in _strongly_connected(self.adjacency):
            node = component[0]
            if len(component) > 1 or node in self.adjacency[node]:
                yield self._shortest_cycle(component)

    def _shortest_cycle(self, component: list[int]) -> list[int]:
        members = set(component)
        # Every cycle passes through a transaction: positions only lead forward.
        start = next(node for node in component if self.txn_at_node[node] is not None)
        parent = {start: start}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for following in self.adjacency[node]:
                if following == start:
                    path = [start, node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if following in members and following not in parent:
                    parent[following] = node
                    queue.append(following)
        raise AssertionError("a strongly connected component without a cycle")

    def describe(self, cycle: list[int]) -> Finding:
        at_txns = [place for place, node in enumerate(cycle) if self.txn_at_node[node] is not None]
        steps = [self._step(cycle[a], cycle[a + 1: b], cycle[b]) for a, b in zip(at_txns, at_txns[1:])]
        txns = [str(self.txn_at_node[cycle[place]]) for place in at_txns[:-1]]
        return Finding(
            Kind.G1C,
            f"a cycle of {len(txns)} transactions, {' -> '.join(txns + txns[:1])}: "
            + "; ".join(text for text, _ in steps),
            processes=_unique(*(self.index.process_of_txn[txn] for txn in txns)),
            positions=tuple(dict.fromkeys(position for _, ends in steps for position in ends)),
            txns=tuple(txns),
        )

    def _step(self, writer_node: int, between: list[int], reader_node: int) -> tuple[str, tuple[Position, ...]]:
        """One edge of a cycle, from a writer through the positions `between`
        to a reader: its text, and the positions written and read."""
        writer, reader = self.txn_at_node[writer_node], self.txn_at_node[reader_node]
        if not between:
            value, where = self.read_off_final[(writer_node, reader_node)]
            return f"{reader} read {value!r} of {writer} at {_at(where)} (a position the final read lacks)", (where,)
        written, read = self.position_at_node[between[0]], self.position_at_node[between[-1]]
        assert written is not None and read is not None
        if written == read:
            value = self.index.final_at[READ_COMMITTED][read]
            return f"{reader} read {writer}'s {value!r} at {_at(read)}", (read,)
        text = f"{reader} read {_at(read)}, past {writer}'s record at {_at(written)}, so {writer} had ended"
        return text, (written, read)


def _strongly_connected(adjacency: list[list[int]]) -> Iterator[list[int]]:
    """Tarjan's algorithm with an explicit stack: chains of 100k nodes must
    not hit the recursion limit."""
    order = [-1] * len(adjacency)  # -1: not visited yet
    lowest = [0] * len(adjacency)
    on_stack = [False] * len(adjacency)
    stack: list[int] = []
    visited = 0
    for root in range(len(adjacency)):
        if order[root] != -1:
            continue
        order[root] = lowest[root] = visited
        visited += 1
        stack.append(root)
        on_stack[root] = True
        walk = [(root, 0)]  # (node, index of its next edge to follow)
        while walk:
            node, edge = walk[-1]
            if edge < len(adjacency[node]):
                walk[-1] = (node, edge + 1)
                following = adjacency[node][edge]
                if order[following] == -1:
                    order[following] = lowest[following] = visited
                    visited += 1
                    stack.append(following)
                    on_stack[following] = True
                    walk.append((following, 0))
                elif on_stack[following]:
                    lowest[node] = min(lowest[node], order[following])
                continue
            walk.pop()
            if walk:
                caller = walk[-1][0]
                lowest[caller] = min(lowest[caller], lowest[node])
            if lowest[node] == order[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component.append(member)
                    if member == node:
                        break
                yield component


def _g1c_cycles(index: _Index) -> Iterator[Finding]:
    graph = _DependencyGraph(index)
    for cycle in graph.cycles():
        yield graph.describe(cycle)


def _poll_order(index: _Index) -> Iterator[Finding]:
    last: dict[tuple[str, int], int] = {}  # (session, partition) -> last offset returned
    for poll in index.polls:
        final_offsets = index.final_offsets.get(poll.isolation)
        for partition, offset, _ in poll.records:
            key = (poll.session, partition)
            previous = last.get(key)
            last[key] = offset
            if previous is None:
                continue
            if offset <= previous:
                yield Finding(
                    Kind.NONMONOTONIC_POLL,
                    f"session {poll.session} returned {_at((partition, offset))} after {_at((partition, previous))}",
                    processes=(poll.process,),
                    positions=((partition, previous), (partition, offset)),
                )
            elif final_offsets is not None and offset > previous + 1:
                offsets = final_offsets.get(partition, [])
                skipped = offsets[bisect_right(offsets, previous): bisect_left(offsets, offset)]
                if skipped:
                    yield Finding(
                        Kind.SKIPPING_POLL,
                        f"session {poll.session} returned {_at((partition, previous))} then "
                        f"{_at((partition, offset))}, skipping {len(skipped)} offsets the final "
                        f"{poll.isolation} read holds: {_some([str(o) for o in skipped])}",
                        processes=(poll.process,),
                        positions=tuple((partition, skipped_offset) for skipped_offset in skipped),
                    )


def _phantoms(index: _Index) -> Iterator[Finding]:
    first_read: dict[str, tuple[Position, str]] = {}
    for read in index.reads():
        for partition, offset, value in read.records:
            if value not in index.sends:
                first_read.setdefault(value, ((partition, offset), read.process))
    for value, (position, reader) in first_read.items():
        yield Finding(
            Kind.PHANTOM,
            f"{value!r}, read at {_at(position)} by {reader}, was never sent",
            processes=(reader,),
            values=(value,),
            positions=(position,),
        )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} history.jsonl", file=sys.stderr)
        return 2
    try:
        report = TxnHistory.read_jsonl(argv[1]).check()
    except HistoryError as error:
        print(f"bad history: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    for line in report.details():
        print(line)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
