"""The exactly-once copier of txn_copier.py with aiokafka at its defaults
plus a transactional id (also its static group member id): reads `input`
read_committed in group `group`, writes each record to `output` (same key
and value) and commits the consumed positions in the same transaction
(`send_offsets_to_transaction`), up to `batch` records per transaction. An
error aborts the transaction and rewinds to the committed offsets; a fatal
one (fenced by its own restarted instance) or a failed abort exits with
code 3, and a transaction stuck past a watchdog ends the process (SIGALRM),
for the test's supervisor to start it again.

usage: txn_copier_aiokafka.py BOOTSTRAP TRANSACTIONAL_ID GROUP INPUT OUTPUT BATCH
"""

import asyncio
import faulthandler
import signal
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced

TRANSACTION_WATCHDOG_S = 30


async def rewind(consumer: AIOKafkaConsumer) -> None:
    for tp in consumer.assignment():
        committed = await consumer.committed(tp)
        consumer.seek(tp, committed if committed is not None else 0)


async def run() -> int:
    bootstrap, transactional_id, group, input_topic, output_topic, batch = sys.argv[1:7]
    consumer = AIOKafkaConsumer(
        input_topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        group_instance_id=transactional_id,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    await consumer.start()
    await producer.start()
    while True:
        polled = await consumer.getmany(timeout_ms=1000, max_records=int(batch))
        messages = [m for records in polled.values() for m in records]
        if not messages:
            continue
        signal.alarm(TRANSACTION_WATCHDOG_S)
        try:
            await producer.begin_transaction()
            for m in messages:
                await producer.send(output_topic, key=m.key, value=m.value)
            offsets = {tp: await consumer.position(tp) for tp in consumer.assignment()}
            await producer.send_offsets_to_transaction(offsets, group)
            await producer.commit_transaction()
            signal.alarm(0)
        except ProducerFenced as e:
            print(f"fatal: {e!r}", file=sys.stderr)
            return 3
        except KafkaError as e:
            print(f"aborting: {e!r}", file=sys.stderr)
            try:
                await producer.abort_transaction()
            except KafkaError as abort_error:
                print(f"abort failed: {abort_error!r}", file=sys.stderr)
                return 3
            await rewind(consumer)
            signal.alarm(0)


def main() -> int:
    faulthandler.register(signal.SIGUSR1)
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
