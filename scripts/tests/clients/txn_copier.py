"""A consume-transform-produce copier with confluent-kafka's defaults plus a
transactional id (also its static group member id): reads `input` read_committed in group `group`, writes each
record's value to `output` (same key) and commits the consumed offsets in the
same transaction (`send_offsets_to_transaction`), `batch` records per
transaction. Runs until killed; the test kills it with SIGKILL and starts it
again. An abortable error aborts and rewinds to the committed offsets; a
fatal one (fenced by its own restarted instance) exits with code 3, and a
transaction stuck in the client past a watchdog ends the process (SIGALRM).

usage: txn_copier.py BOOTSTRAP TRANSACTIONAL_ID GROUP INPUT OUTPUT BATCH
"""

import faulthandler
import os
import signal
import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

# Longest a transaction (begin to commit or abort) may take before the
# copier gives up on its client and exits (see the watchdog below).
TRANSACTION_WATCHDOG_S = 20


def rewind(consumer: Consumer) -> None:
    assignment = consumer.assignment()
    if not assignment:
        return
    for tp in consumer.committed(assignment, 30):
        consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))


def main() -> int:
    # SIGUSR1 prints where the copier is (a test that finds it stuck).
    faulthandler.register(signal.SIGUSR1)
    bootstrap, transactional_id, group, input_topic, output_topic, batch = sys.argv[1:7]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        # Static membership (KIP-345): a restarted copier takes its slot back
        # at once instead of the group waiting out the killed one's session.
        "group.instance.id": transactional_id,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([input_topic])
    producer_conf = {"bootstrap.servers": bootstrap, "transactional.id": transactional_id}
    if os.environ.get("TXN_COPIER_DEBUG"):
        # librdkafka's own account of the transaction (e.g. "eos,protocol").
        producer_conf["debug"] = os.environ["TXN_COPIER_DEBUG"]
    producer = Producer(producer_conf)
    producer.init_transactions(60)
    while True:
        messages = [m for m in consumer.consume(int(batch), 1.0) if not m.error()]
        if not messages:
            continue
        # Watchdog: librdkafka's send_offsets_to_transaction() can hang for
        # good when its cached group coordinator was decommissioned (after
        # a re-bootstrap, which a restart of the only broker causes:
        # librdkafka issues #5511 and #5456, open). SIGALRM's default
        # action ends the process; its supervisor starts it again, and the
        # new instance fences the stuck one's transaction.
        signal.alarm(TRANSACTION_WATCHDOG_S)
        try:
            producer.begin_transaction()
            for m in messages:
                producer.produce(output_topic, key=m.key(), value=m.value())
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 60)
            producer.commit_transaction(60)
            signal.alarm(0)
        except KafkaException as e:
            error = e.args[0]
            if error.fatal():
                print(f"fatal: {error}", file=sys.stderr)
                return 3
            print(f"aborting: {error}", file=sys.stderr)
            try:
                producer.abort_transaction(60)
            except KafkaException as abort_error:
                print(f"abort failed: {abort_error}", file=sys.stderr)
                return 3
            rewind(consumer)
            signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
