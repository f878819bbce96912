"""Disk full: with the data dir on a small tmpfs that is filled up, a produce
that needs new space fails with KAFKA_STORAGE_ERROR (no hang, no crash), the
broker keeps serving, and once space returns the same partition takes writes
again at the next dense offset, with nothing of the failed writes in the log
(also after a crash and recovery)."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from helpers import (
    ERR_KAFKA_STORAGE_ERROR,
    ERR_NONE,
    RawConnection,
    assert_broker_answers,
    consume_confluent,
    create_topic_confluent,
    encode_record_batch,
    log_lines,
    make_records,
    produce_confluent,
    segment_paths,
    stored_batches,
    verify_log,
)

FS_SIZE = "64m"
FILL_CHUNK_BYTES = 1 << 20
# Larger than a page, so that it cannot fit in the tail of an allocated one.
BIG_VALUE_BYTES = 64 * 1024
FAILED_PRODUCES = 3


@pytest.fixture
def small_fs(tmp_path):
    """A 64 MiB tmpfs mounted under tmp_path; unmounted at teardown."""
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path) -> int:
    """Writes to `path` until the file system is full; returns bytes written."""
    written = 0
    chunk = b"\xee" * FILL_CHUNK_BYTES
    with open(path, "wb", buffering=0) as f:
        # Bound: a 64 MiB file system holds at most this many chunks.
        for _ in range(1024):
            try:
                written += f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
        else:
            raise AssertionError(f"{path} never filled up")
    # Small writes for the last partial chunk's worth of space.
    with open(path, "ab", buffering=0) as f:
        for _ in range(FILL_CHUNK_BYTES // 4096 + 1):
            try:
                written += f.write(b"\xee" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    return written


def big_batch(tag: str) -> bytes:
    return encode_record_batch(
        [(tag.encode(), os.urandom(BIG_VALUE_BYTES), [])],
        base_timestamp=int(time.time() * 1000),
    )


# The main broker fixture's teardown must run before the tmpfs is unmounted:
# `small_fs` comes first in the argument list, so it is torn down last.
def test_disk_full_fails_produce_and_resumes(small_fs, broker_factory):
    broker = broker_factory(start=False)
    broker.data_dir = small_fs / "data"
    broker.start()
    topic = "full"
    create_topic_confluent(broker.bootstrap, topic, 2)
    records = make_records(400, seed=5)
    acks = produce_confluent(broker.bootstrap, topic, records, partitions=[i % 2 for i in range(len(records))])
    next_offset = sum(1 for p, _ in acks if p == 0)

    filler = small_fs / "filler"
    filled = fill(filler)
    assert filled > 0

    with RawConnection(broker.bootstrap) as conn:
        for attempt in range(FAILED_PRODUCES):
            (result,) = conn.produce(8, topic, 0, big_batch(f"failed-{attempt}"))
            assert result.error_code == ERR_KAFKA_STORAGE_ERROR, f"produce on a full disk: {result}"
    text = broker.log_text()
    failures = log_lines(text, "write failed; appends refused with KAFKA_STORAGE_ERROR")
    assert len(failures) >= FAILED_PRODUCES, failures
    assert all("ERROR" in line for line in failures)
    assert any("No space left" in line or "short write" in line for line in failures), failures

    # Still up and serving: metadata, and reads of everything acknowledged.
    assert broker.is_running()
    assert_broker_answers(broker.bootstrap)
    verify_log(records, acks, consume_confluent(broker.bootstrap, topic, range(2)), 2)

    filler.unlink()
    more = make_records(50, seed=6)
    with RawConnection(broker.bootstrap) as conn:
        (result,) = conn.produce(8, topic, 0, big_batch("after"))
    # The failed batches' offsets were never acknowledged and are reused.
    assert (result.error_code, result.base_offset) == (ERR_NONE, next_offset)
    more_acks = produce_confluent(broker.bootstrap, topic, more, partitions=[0] * len(more))
    assert [off for _, off in more_acks] == list(range(next_offset + 1, next_offset + 1 + len(more)))

    def check_log():
        got = consume_confluent(broker.bootstrap, topic, [0])[0]
        assert [r.offset for r in got] == list(range(next_offset + 1 + len(more)))
        assert got[next_offset].key == b"after"
        assert [r.value for r in got[next_offset + 1 :]] == [r.value for r in more]
        assert not any(r.key.startswith(b"failed-") for r in got if r.key)
        (segment,) = segment_paths(broker.data_dir, topic, 0)
        batches = stored_batches(segment)
        assert batches[-1].position + batches[-1].total_bytes == segment.stat().st_size, "bytes after the last batch"

    check_log()
    # The failed writes left nothing on disk for recovery to cut.
    broker.kill9()
    broker.start()
    assert not log_lines(broker.log_since_last_start(), "truncating segment tail")
    check_log()
