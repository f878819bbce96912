// The exactly-once copier of scripts/tests/clients/txn_copier.py with
// kafkajs: a transactional producer (kafkajs requires idempotent: true and
// maxInFlightRequests: 1 for a transactional id) and a consumer at its
// defaults (read_committed) that copies `input` to `output` (same key and
// value) in transactions of up to BATCH records, each committing the
// consumed offsets with `sendOffsets`. A failed transaction is aborted and
// the process exits with code 3; a transaction stuck past a watchdog exits
// with code 4; the test's supervisor starts it again, and it resumes from
// the committed offsets.
//   node txn_copier.js BOOTSTRAP TRANSACTIONAL_ID GROUP INPUT OUTPUT BATCH
'use strict';
const { Kafka, logLevel } = require('kafkajs');

// Longest a transaction (begin to commit or abort) may take.
const TRANSACTION_WATCHDOG_MS = 30000;

async function main() {
  const [bootstrap, transactionalId, group, input, output, batchText] = process.argv.slice(2);
  const size = Number(batchText);
  const kafka = new Kafka({ clientId: transactionalId, brokers: bootstrap.split(','), logLevel: logLevel.WARN });
  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const consumer = kafka.consumer({ groupId: group });
  await consumer.connect();
  await consumer.subscribe({ topic: input, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
      for (let i = 0; i < batch.messages.length; i += size) {
        if (!isRunning() || isStale()) return;
        const chunk = batch.messages.slice(i, i + size);
        const last = chunk[chunk.length - 1].offset;
        const watchdog = setTimeout(() => {
          process.stderr.write('transaction stuck: exiting\n');
          process.exit(4);
        }, TRANSACTION_WATCHDOG_MS);
        const transaction = await producer.transaction();
        try {
          await transaction.send({ topic: output, messages: chunk.map((m) => ({ key: m.key, value: m.value })) });
          await transaction.sendOffsets({
            consumerGroupId: group,
            topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: (BigInt(last) + 1n).toString() }] }],
          });
          await transaction.commit();
        } catch (e) {
          process.stderr.write(`aborting: ${e.stack || e}\n`);
          try {
            await transaction.abort();
          } catch (abortError) {
            process.stderr.write(`abort failed: ${abortError.stack || abortError}\n`);
          }
          process.exit(3);
        }
        clearTimeout(watchdog);
        resolveOffset(last);
        await heartbeat();
      }
    },
  });
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
