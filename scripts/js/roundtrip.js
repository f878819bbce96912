// Produces COUNT records with kafkajs (default producer settings, or
// idempotent: true) and consumes them back as a group member; prints one
// JSON line: {"acked": [[partition, offset]...], "consumed": [[partition, offset, value]...]}.
//   node roundtrip.js BOOTSTRAP TOPIC GROUP COUNT [idempotent]
'use strict';
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [bootstrap, topic, group, countText, mode] = process.argv.slice(2);
  const count = Number(countText);
  const kafka = new Kafka({ clientId: 'gregor-test', brokers: [bootstrap], logLevel: logLevel.WARN });
  const producer = kafka.producer(mode === 'idempotent' ? { idempotent: true } : {});
  await producer.connect();
  const acked = [];
  for (let i = 0; i < count; i += 10) {
    const messages = [];
    for (let j = i; j < Math.min(i + 10, count); j++) {
      messages.push({ key: `k${j % 7}`, value: `${j}` });
    }
    const results = await producer.send({ topic, messages });
    for (const r of results) acked.push([r.partition, Number(r.baseOffset)]);
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: group });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const consumed = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${consumed.length} of ${count} in 60 s`)), 60000);
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        consumed.push([partition, Number(message.offset), message.value.toString()]);
        if (consumed.length >= count) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  process.stdout.write(JSON.stringify({ acked, consumed }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
