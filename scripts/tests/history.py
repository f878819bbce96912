"""The history checker of the fault tests: every client records what it sent,
what was acknowledged (where), what failed (definitely, or with an unknown
outcome) and what it read; a final full read of the log is the ground truth.
`check` finds what must never happen:

  - LOST: an acknowledged record is not at its acknowledged offset;
  - MOVED: an acknowledged record is in the log, but at another offset;
  - DUPLICATE: a record is in the log more than once (an error when its
    producer was idempotent or never retried);
  - PHANTOM: a record read (during the run or finally) that no one sent;
  - REWRITTEN: an offset read during the run whose record is not the one the
    final read finds there (a read of data the cluster later lost);
  - FAILED_BUT_WRITTEN: a record whose send failed definitely is in the log.

Records are identified by their value, unique per send (`History.value`).
Pure bookkeeping: no clients, no broker; the tests feed it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

Position = tuple[int, int]  # (partition, offset)


@dataclass
class Send:
    producer: str
    index: int
    value: bytes
    idempotent: bool
    acked_at: Position | None = None
    # None: no answer (yet); "definite": the broker refused it; "unknown": a
    # timeout or a lost connection, it may or may not be in the log.
    failure: str | None = None


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    sent: int = 0
    acked: int = 0
    failed_definite: int = 0
    failed_unknown: int = 0
    read_during_run: int = 0
    in_log: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.startswith(kind + ":"))

    def summary(self) -> str:
        kinds = ("LOST", "MOVED", "DUPLICATE", "PHANTOM", "REWRITTEN", "FAILED_BUT_WRITTEN")
        found = " ".join(f"{k.lower()}={self.count(k)}" for k in kinds)
        return (
            f"sent={self.sent} acked={self.acked} failed_definite={self.failed_definite} "
            f"failed_unknown={self.failed_unknown} read_during_run={self.read_during_run} "
            f"in_log={self.in_log} {found}"
        )


class History:
    """What the clients of one test did, in the order they saw it."""

    def __init__(self) -> None:
        self.sends: dict[bytes, Send] = {}
        self.reads: dict[Position, set[bytes]] = defaultdict(set)
        self.retried: set[bytes] = set()

    @staticmethod
    def value(producer: str, index: int, pad: bytes = b"") -> bytes:
        """A value unique to one send, which names its sender."""
        return f"{producer}#{index}|".encode() + pad

    def sent(self, producer: str, index: int, value: bytes, *, idempotent: bool) -> None:
        assert value not in self.sends, f"value sent twice by the test itself: {value[:40]!r}"
        self.sends[value] = Send(producer, index, value, idempotent)

    def acked(self, value: bytes, partition: int, offset: int) -> None:
        send = self.sends[value]
        assert send.acked_at in (None, (partition, offset)), f"{value[:40]!r} acknowledged twice"
        send.acked_at = (partition, offset)

    def failed(self, value: bytes, *, definite: bool) -> None:
        self.sends[value].failure = "definite" if definite else "unknown"

    def retried_by_client(self, value: bytes) -> None:
        """A non-idempotent client resent it: a second copy is allowed."""
        self.retried.add(value)

    def read(self, partition: int, offset: int, value: bytes) -> None:
        self.reads[(partition, offset)].add(value)

    def check(self, final_log: dict[int, list[tuple[int, bytes]]]) -> Report:
        """`final_log`: partition -> [(offset, value)] read from the start of
        every partition to its end, after the faults."""
        report = Report(sent=len(self.sends))
        at: dict[Position, bytes] = {}
        where: dict[bytes, list[Position]] = defaultdict(list)
        for partition, records in final_log.items():
            for offset, value in records:
                at[(partition, offset)] = value
                where[value].append((partition, offset))
        report.in_log = len(at)
        report.read_during_run = sum(len(v) for v in self.reads.values())
        for send in self.sends.values():
            positions = where.get(send.value, [])
            if send.acked_at is not None:
                report.acked += 1
                if send.acked_at not in positions:
                    kind = "MOVED" if positions else "LOST"
                    report.problems.append(
                        f"{kind}: {send.producer} record {send.index} acknowledged at "
                        f"partition {send.acked_at[0]} offset {send.acked_at[1]}"
                        + (f" is at {positions}" if positions else f" is gone ({_show(at.get(send.acked_at))} there)")
                    )
            if send.failure == "definite":
                report.failed_definite += 1
                if positions:
                    report.problems.append(
                        f"FAILED_BUT_WRITTEN: {send.producer} record {send.index} was refused but is at {positions}"
                    )
            elif send.failure == "unknown":
                report.failed_unknown += 1
            if len(positions) > 1 and (send.idempotent or send.value not in self.retried):
                report.problems.append(
                    f"DUPLICATE: {send.producer} record {send.index} is in the log {len(positions)} times: {positions}"
                )
        for value, positions in where.items():
            if value not in self.sends:
                report.problems.append(f"PHANTOM: {_show(value)} at {positions} was never sent")
        for position, values in sorted(self.reads.items()):
            for value in values:
                if value not in self.sends:
                    report.problems.append(f"PHANTOM: {_show(value)} read at {position} was never sent")
                elif at.get(position) != value:
                    report.problems.append(
                        f"REWRITTEN: partition {position[0]} offset {position[1]} was read as {_show(value)}, "
                        f"the log now holds {_show(at.get(position))}"
                    )
        return report


def _show(value: bytes | None) -> str:
    return "nothing" if value is None else repr(value[:40])
