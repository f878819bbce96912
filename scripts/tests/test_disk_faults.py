"""Damaged segment files: the broker must start, cut only an invalid tail,
rebuild what it can (indexes), say in its log what it did, and refuse to
serve a partition whose log has a hole in the middle rather than drop the
acknowledged batches after the hole.

Every test writes acknowledged data, crashes (SIGKILL) or stops the broker,
damages a file the way a disk or a torn write would, restarts, and checks the
log lines and what clients read.
"""

from __future__ import annotations

import hashlib
import time

from confluent_kafka import TopicPartition

from helpers import (
    ERR_KAFKA_STORAGE_ERROR,
    ERR_NONE,
    RawConnection,
    confluent_consumer,
    consume_confluent,
    create_topic_confluent,
    encode_record_batch,
    log_field,
    log_lines,
    make_records,
    produce_confluent,
    segment_paths,
    stored_batches,
    watermarks,
)

RECORDS = 600
# Many small batches, so that "the last batch" and "a batch in the middle"
# are different batches.
SMALL_BATCHES = {"batch.num.messages": 25, "linger.ms": 1}
CHECKPOINT_FILE = "active-segment.checkpoint"


def write_records(broker, topic: str, partitions: int, count: int = RECORDS, seed: int = 7):
    """Creates `topic` and writes `count` records round-robin over its
    partitions; returns (records, acks)."""
    create_topic_confluent(broker.bootstrap, topic, partitions)
    records = make_records(count, seed)
    acks = produce_confluent(
        broker.bootstrap,
        topic,
        records,
        partitions=[i % partitions for i in range(count)],
        extra_conf=SMALL_BATCHES,
    )
    return records, acks


def assert_reads_exactly(broker, topic: str, partition: int, records, acks, below_offset: int) -> None:
    """Partition `partition` holds exactly the acknowledged records with
    offsets below `below_offset`, dense from 0 and byte for byte."""
    expected = sorted((off, i) for i, (p, off) in enumerate(acks) if p == partition and off < below_offset)
    got = consume_confluent(broker.bootstrap, topic, [partition])[partition]
    assert [r.offset for r in got] == [off for off, _ in expected], (
        f"partition {partition}: read offsets {[r.offset for r in got][:5]}..{[r.offset for r in got][-3:]}, "
        f"expected 0..{below_offset - 1}"
    )
    for r, (off, i) in zip(got, expected):
        want = records[i]
        assert (r.key, r.value, r.headers) == (want.key, want.value, want.headers), f"offset {off} differs"


def produce_raw(bootstrap: str, topic: str, partition: int, value: bytes = b"after") -> tuple[int, int]:
    """One record with a raw Produce v8 (acks=all); returns (error, base offset)."""
    batch = encode_record_batch([(b"k", value, [])], base_timestamp=int(time.time() * 1000))
    with RawConnection(bootstrap) as conn:
        (result,) = conn.produce(8, topic, partition, batch)
    return result.error_code, result.base_offset


def single_line(text: str, message: str) -> str:
    lines = log_lines(text, message)
    assert len(lines) == 1, f"expected one log line with {message!r}, found {len(lines)}:\n" + "\n".join(lines)
    return lines[0]


def test_torn_last_batch_is_truncated(broker_factory):
    broker = broker_factory()
    records, acks = write_records(broker, "torn", 1)
    broker.kill9()
    (segment,) = segment_paths(broker.data_dir, "torn", 0)
    last = stored_batches(segment)[-1]
    size = segment.stat().st_size
    assert last.position + last.total_bytes == size
    cut_at = last.position + last.total_bytes // 2
    with open(segment, "r+b") as f:
        f.truncate(cut_at)

    broker.start()
    line = single_line(broker.log_since_last_start(), "truncating segment tail")
    assert "WARN" in line
    assert log_field(line, "file") == str(segment)
    assert int(log_field(line, "truncated_bytes")) == cut_at - last.position
    assert int(log_field(line, "valid_bytes")) == last.position
    assert int(log_field(line, "offset")) == last.base_offset
    assert "torn batch" in line
    assert segment.stat().st_size == last.position
    assert_reads_exactly(broker, "torn", 0, records, acks, last.base_offset)
    # Writes continue densely where the valid log ends.
    assert produce_raw(broker.bootstrap, "torn", 0) == (ERR_NONE, last.base_offset)


def test_flipped_byte_in_last_batch_is_truncated(broker_factory):
    broker = broker_factory()
    records, acks = write_records(broker, "flip", 1)
    broker.kill9()
    (segment,) = segment_paths(broker.data_dir, "flip", 0)
    last = stored_batches(segment)[-1]
    size = segment.stat().st_size
    with open(segment, "r+b") as f:
        f.seek(last.position + last.total_bytes - 3)  # inside the last record
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x5A]))

    broker.start()
    line = single_line(broker.log_since_last_start(), "truncating segment tail")
    assert int(log_field(line, "truncated_bytes")) == size - last.position
    assert "CRC" in line or "crc" in line, line
    assert segment.stat().st_size == last.position
    assert not log_lines(broker.log_since_last_start(), "corrupt batch inside the log")
    assert_reads_exactly(broker, "flip", 0, records, acks, last.base_offset)
    assert produce_raw(broker.bootstrap, "flip", 0) == (ERR_NONE, last.base_offset)


def test_zero_filled_tail_is_truncated(broker_factory):
    broker = broker_factory()
    records, acks = write_records(broker, "zeros", 1)
    broker.kill9()
    (segment,) = segment_paths(broker.data_dir, "zeros", 0)
    size = segment.stat().st_size
    zeros = 3 * 4096 + 17  # like blocks allocated but never written before a power cut
    with open(segment, "ab") as f:
        f.write(b"\0" * zeros)

    broker.start()
    line = single_line(broker.log_since_last_start(), "truncating segment tail")
    assert int(log_field(line, "truncated_bytes")) == zeros
    assert int(log_field(line, "valid_bytes")) == size
    assert segment.stat().st_size == size
    assert_reads_exactly(broker, "zeros", 0, records, acks, RECORDS)
    assert produce_raw(broker.bootstrap, "zeros", 0) == (ERR_NONE, RECORDS)


def test_deleted_index_files_are_rebuilt(broker_factory):
    """Closed segments whose .index / .timeindex file is gone are rescanned and
    the files rewritten; seeking by offset and by timestamp still lands on the
    right record."""
    broker = broker_factory("--segment-bytes", 16 * 1024)
    topic = "reindex"
    create_topic_confluent(broker.bootstrap, topic, 1)
    count = 2000
    records = make_records(count, seed=11)
    base_ts = 1_700_000_000_000
    timestamps = [base_ts + 10 * i for i in range(count)]
    acks = produce_confluent(broker.bootstrap, topic, records, partitions=[0] * count, timestamps=timestamps, extra_conf=SMALL_BATCHES)
    assert broker.stop() == 0
    indexes = segment_paths(broker.data_dir, topic, 0, "index")
    time_indexes = segment_paths(broker.data_dir, topic, 0, "timeindex")
    assert len(indexes) >= 4, f"expected several segments, found {indexes}"
    # The second segment loses its offset index, the third its time index.
    lost_index, lost_time_index = indexes[1], time_indexes[2]
    originals = {p: p.read_bytes() for p in (lost_index, lost_time_index)}
    assert originals[lost_index], "a 16 KiB segment has offset index entries"
    lost_index.unlink()
    lost_time_index.unlink()

    broker.start()
    text = broker.log_since_last_start()
    missing = log_lines(text, "segment index missing or invalid; rebuilding it by a scan")
    assert sorted(log_field(line, "file") for line in missing) == sorted(
        str(p.with_suffix(".log")) for p in (lost_index, lost_time_index)
    )
    rebuilt = log_lines(text, "rebuilt segment indexes")
    assert len(rebuilt) == 2
    # Rebuilt from the data, they match what the broker wrote as it appended.
    for path, original in originals.items():
        assert path.read_bytes() == original, f"{path.name} rebuilt differently"

    consumer = confluent_consumer(broker.bootstrap)
    try:
        for i in (0, 1, 777, 1234, count - 1):
            want = timestamps[i]
            (tp,) = consumer.offsets_for_times([TopicPartition(topic, 0, want)], timeout=10)
            assert tp.offset == acks[i][1], f"timestamp {want}: offset {tp.offset}, expected {acks[i][1]}"
    finally:
        consumer.close()
    for start in (1, 500, 1501, count - 1):
        got = consume_confluent(broker.bootstrap, topic, [0], start_offset=start)[0]
        assert [r.offset for r in got] == list(range(start, count)), f"seek to {start}"
        assert got[0].value == records[start].value


def test_half_written_checkpoint_is_ignored(broker_factory):
    """A clean stop leaves a checkpoint so that the next start trusts the
    active segment without a scan; a checkpoint cut short is detected,
    logged and ignored, and the segment is scanned instead."""
    broker = broker_factory()
    records, acks = write_records(broker, "ckpt", 2)
    assert broker.stop() == 0

    # An intact checkpoint: the active segments are trusted, not scanned.
    broker.start()
    text = broker.log_since_last_start()
    assert not log_lines(text, "recovered partition"), "a clean restart scanned a segment"
    assert not log_lines(text, "invalid checkpoint")
    assert broker.stop() == 0

    damaged = broker.data_dir / "ckpt-0" / CHECKPOINT_FILE
    content = damaged.read_bytes()
    damaged.write_bytes(content[: len(content) // 2])
    broker.start()
    text = broker.log_since_last_start()
    line = single_line(text, "invalid checkpoint ignored; scanning the active segment")
    assert log_field(line, "file") == str(damaged)
    recovered = single_line(text, "recovered partition")
    assert log_field(recovered, "dir") == str(damaged.parent)
    assert int(log_field(recovered, "truncated_bytes")) == 0
    for p in (0, 1):
        assert_reads_exactly(broker, "ckpt", p, records, acks, RECORDS)
        assert watermarks(broker.bootstrap, "ckpt", p) == (0, RECORDS // 2)


def test_corrupt_batch_in_the_middle_takes_the_partition_offline(broker_factory):
    """A damaged batch with valid batches after it is not a torn tail: the
    broker logs an ERROR naming the file, offset and position, leaves the file
    as it is and refuses produce and fetch on that partition, while the other
    partitions keep working."""
    broker = broker_factory()
    topic = "hole"
    records, acks = write_records(broker, topic, 2)
    broker.kill9()
    (segment,) = segment_paths(broker.data_dir, topic, 0)
    batches = stored_batches(segment)
    assert len(batches) >= 4
    bad = batches[len(batches) // 2]
    with open(segment, "r+b") as f:
        f.seek(bad.position + bad.total_bytes - 2)  # in a record: only the CRC notices
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    damaged_sha = hashlib.sha256(segment.read_bytes()).hexdigest()

    broker.start()
    text = broker.log_since_last_start()
    line = single_line(text, "corrupt batch inside the log")
    assert "ERROR" in line
    assert log_field(line, "file") == str(segment)
    assert int(log_field(line, "offset")) == bad.base_offset
    assert int(log_field(line, "position")) == bad.position
    assert int(log_field(line, "next_valid_position")) == bad.position + bad.total_bytes
    offline = single_line(text, "partition offline")
    assert log_field(offline, "topic") == topic and log_field(offline, "partition") == "0"
    assert not log_lines(text, "truncating segment tail")

    # The damaged partition refuses loudly.
    assert produce_raw(broker.bootstrap, topic, 0)[0] == ERR_KAFKA_STORAGE_ERROR
    with RawConnection(broker.bootstrap) as conn:
        for offset in (0, bad.base_offset + bad.records):
            fetched = conn.fetch(topic, 0, offset)
            assert fetched.error_code == ERR_KAFKA_STORAGE_ERROR, f"fetch at {offset}: {fetched}"

    # The other partition serves reads and writes as before.
    assert_reads_exactly(broker, topic, 1, records, acks, RECORDS)
    assert produce_raw(broker.bootstrap, topic, 1) == (ERR_NONE, RECORDS // 2)

    # Nothing touched the damaged file, also not a clean stop.
    assert broker.stop() == 0
    assert hashlib.sha256(segment.read_bytes()).hexdigest() == damaged_sha
    broker.start()
    assert single_line(broker.log_since_last_start(), "corrupt batch inside the log")
    assert produce_raw(broker.bootstrap, topic, 0)[0] == ERR_KAFKA_STORAGE_ERROR
