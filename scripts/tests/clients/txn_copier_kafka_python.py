"""The exactly-once copier of txn_copier.py with kafka-python at its
defaults plus a transactional id (also its static group member id): reads
`input` read_committed in group `group`, writes each record to `output`
(same key and value) and commits the consumed positions in the same
transaction (`send_offsets_to_transaction`), up to `batch` records per
transaction. An error aborts the transaction and rewinds to the committed
offsets; a fatal one (fenced by its own restarted instance) or a failed
abort exits with code 3, and a transaction stuck past a watchdog ends the
process (SIGALRM), for the test's supervisor to start it again.

usage: txn_copier_kafka_python.py BOOTSTRAP TRANSACTIONAL_ID GROUP INPUT OUTPUT BATCH
"""

import faulthandler
import signal
import sys

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata
from kafka.errors import KafkaError, ProducerFencedError

# Longest a transaction (begin to commit or abort) may take before the
# copier gives up on its client and exits.
TRANSACTION_WATCHDOG_S = 30


def rewind(consumer: KafkaConsumer) -> None:
    for tp in consumer.assignment():
        committed = consumer.committed(tp)
        consumer.seek(tp, committed if committed is not None else 0)


def main() -> int:
    faulthandler.register(signal.SIGUSR1)
    bootstrap, transactional_id, group, input_topic, output_topic, batch = sys.argv[1:7]
    servers = bootstrap.split(",")
    consumer = KafkaConsumer(
        input_topic,
        bootstrap_servers=servers,
        group_id=group,
        group_instance_id=transactional_id,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = KafkaProducer(bootstrap_servers=servers, transactional_id=transactional_id)
    producer.init_transactions()
    while True:
        polled = consumer.poll(timeout_ms=1000, max_records=int(batch))
        messages = [m for records in polled.values() for m in records]
        if not messages:
            continue
        signal.alarm(TRANSACTION_WATCHDOG_S)
        try:
            producer.begin_transaction()
            for m in messages:
                producer.send(output_topic, key=m.key, value=m.value)
            offsets = {tp: OffsetAndMetadata(consumer.position(tp), "", -1) for tp in consumer.assignment()}
            producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
            producer.commit_transaction()
            signal.alarm(0)
        except ProducerFencedError as e:
            print(f"fatal: {e!r}", file=sys.stderr)
            return 3
        except KafkaError as e:
            print(f"aborting: {e!r}", file=sys.stderr)
            try:
                producer.abort_transaction()
            except KafkaError as abort_error:
                print(f"abort failed: {abort_error!r}", file=sys.stderr)
                return 3
            rewind(consumer)
            signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
