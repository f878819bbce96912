"""The history checker for fault tests: what clients sent, what the cluster
acknowledged (and where), and a final full read, compared.

A history is a list of sends. Each send has a unique value, the producer that
sent it, whether that producer is idempotent, and its outcome:
- "acked" with the (partition, offset) the broker answered,
- "failed" with the error the client reported (the record may or may not be
  in the log: Kafka's clients call a timed-out send failed even when the
  broker wrote it),
- "indeterminate": no answer before the test stopped waiting.

The final read is every (partition, offset, value) a consumer read from the
start of every partition to its high watermark.

Findings, each of which a correct cluster never produces:
- lost: an acknowledged value that is not in the final read;
- moved: an acknowledged value read at another (partition, offset) than the
  one acknowledged, or the same offset holding another value (two values at
  one offset);
- duplicated: an idempotent producer's value read more than once;
- phantom: a value read that was never sent.

Run on its own to check a history saved as JSON lines:
    python3 scripts/history_check.py sends.jsonl reads.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Send:
    value: bytes
    producer: str
    idempotent: bool
    outcome: str = "indeterminate"  # acked | failed | indeterminate
    partition: int = -1
    offset: int = -1
    error: str | None = None


@dataclass
class Read:
    partition: int
    offset: int
    value: bytes


@dataclass
class Findings:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    indeterminate: int = 0
    read: int = 0
    lost: list = field(default_factory=list)
    moved: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    phantom: list = field(default_factory=list)
    # Failed or indeterminate sends that are in the log anyway (allowed).
    unacked_present: int = 0

    def ok(self) -> bool:
        return not (self.lost or self.moved or self.duplicated or self.phantom)

    def summary(self) -> str:
        return (
            f"sent={self.sent} acked={self.acked} failed={self.failed} "
            f"indeterminate={self.indeterminate} read={self.read} "
            f"unacked_present={self.unacked_present} lost={len(self.lost)} "
            f"moved={len(self.moved)} duplicated={len(self.duplicated)} "
            f"phantom={len(self.phantom)}"
        )


def check(sends: list[Send], reads: list[Read]) -> Findings:
    findings = Findings(sent=len(sends), read=len(reads))
    by_value: dict[bytes, Send] = {}
    for send in sends:
        assert send.value not in by_value, f"value sent twice by the test: {send.value!r}"
        by_value[send.value] = send
        if send.outcome == "acked":
            findings.acked += 1
        elif send.outcome == "failed":
            findings.failed += 1
        else:
            findings.indeterminate += 1
    at: dict[tuple[int, int], bytes] = {}
    seen: Counter = Counter()
    for read in reads:
        key = (read.partition, read.offset)
        if key in at and at[key] != read.value:
            findings.moved.append(("two values at one offset", key, at[key], read.value))
        at[key] = read.value
        seen[read.value] += 1
        if read.value not in by_value:
            findings.phantom.append(key)
    for value, send in by_value.items():
        count = seen.get(value, 0)
        if send.outcome == "acked":
            if count == 0:
                findings.lost.append((send.producer, value, send.partition, send.offset))
            elif at.get((send.partition, send.offset)) != value:
                findings.moved.append(("acked elsewhere", value, send.partition, send.offset))
        elif count > 0:
            findings.unacked_present += 1
        if send.idempotent and count > 1:
            findings.duplicated.append((send.producer, value, count))
    return findings


def _load(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__)
        return 2
    sends = [
        Send(
            value=s["value"].encode(),
            producer=s["producer"],
            idempotent=s["idempotent"],
            outcome=s["outcome"],
            partition=s.get("partition", -1),
            offset=s.get("offset", -1),
            error=s.get("error"),
        )
        for s in _load(argv[1])
    ]
    reads = [Read(r["partition"], r["offset"], r["value"].encode()) for r in _load(argv[2])]
    findings = check(sends, reads)
    print(findings.summary())
    return 0 if findings.ok() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
