// A Kafka peer of the bus written with kafkajs, following docs/wire-format.md ("Talking to the
// bus from another client"), never the bus's own code.
// usage: node kafka_peer.mjs COMMAND BOOTSTRAP SUBJECT ... (the commands of tests/interop/peer.mjs;
// every subject is a topic of the same name)
//   listen   read the topic from its start with a group of its own
//   publish  one record in binary mode
//   respond  answer queries as the service's group, SERVICE@SUBJECT, as the bus names it
//   ask      a query naming a reply topic of its own
import { require, emit, fail, uuid, cloudEvent, limit, pythonEnvelope } from "./peer.mjs";

process.env.KAFKAJS_NO_PARTITIONER_WARNING = "1";
const { Kafka, logLevel } = require("kafkajs");
const [command, bootstrap, topic, ...args] = process.argv.slice(2);
limit(60000);
const kafka = new Kafka({ clientId: "kafkajs-peer", brokers: bootstrap.split(","),
                          logLevel: logLevel.ERROR });

function headersOf(message) {
  const out = {};
  for (const [name, value] of Object.entries(message.headers ?? {})) out[name] = String(value);
  return out;
}

// The CloudEvent a binary-mode Kafka record carries, checked by the CloudEvents SDK.
function eventOf(message) {
  const h = headersOf(message);
  const attributes = { data: JSON.parse(message.value.toString()) };
  for (const [name, value] of Object.entries(h)) {
    if (name.startsWith("ce_")) attributes[name.slice(3)] = value;
  }
  if (h["content-type"]) attributes.datacontenttype = h["content-type"];
  return JSON.parse(JSON.stringify(cloudEvent(attributes)));
}

function ceHeaders(type, extra = {}) {
  const id = uuid();
  return { id, headers: { ce_specversion: "1.0", ce_id: id, ce_source: "urn:kafkajs-peer",
                          ce_type: type, "content-type": "application/json", ...extra } };
}

// Reads `topic` from its start with a group of its own, calling `each` per record.
async function readFromStart(topic, group, each) {
  const consumer = kafka.consumer({ groupId: group, allowAutoTopicCreation: true });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => each(message) });
  return consumer;
}

if (command === "listen") {
  const [count] = args;
  let seen = 0;
  await readFromStart(topic, "kafkajs-listener-" + uuid(), (message) => {
    emit("received", { cloudevent: eventOf(message) });
    if (++seen === Number(count)) process.exit(0);
  });
  emit("ready");
} else if (command === "publish") {
  const [type, data] = args;
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const { id, headers } = ceHeaders(type, { ce_correlationid: "corr-" + type });
  await producer.send({ topic, messages: [{ value: data, headers }] });
  emit("published", { id });
  process.exit(0);
} else if (command === "publish-envelope") {
  const [type, data] = args;
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const { id, body } = pythonEnvelope(type, data);
  await producer.send({ topic, messages: [{ value: body }] });
  emit("published", { id });
  process.exit(0);
} else if (command === "respond") {
  const [service, count] = args;
  const group = service + "@" + topic;
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const consumer = kafka.consumer({ groupId: group, allowAutoTopicCreation: true });
  await consumer.connect();
  // The bus sends a query only to a service whose group has read the topic: commit where the
  // group starts, once it has joined.
  consumer.on(consumer.events.GROUP_JOIN, async ({ payload }) => {
    const admin = kafka.admin();
    await admin.connect();
    const ends = await admin.fetchTopicOffsets(topic);
    await admin.disconnect();
    const mine = payload.memberAssignment[topic] ?? [];
    await consumer.commitOffsets(ends.filter((p) => mine.includes(p.partition))
      .map((p) => ({ topic, partition: p.partition, offset: p.offset })));
    emit("ready");
  });
  await consumer.subscribe({ topic, fromBeginning: false });
  let answered = 0;
  await consumer.run({
    eachMessage: async ({ message }) => {
      const query = eventOf(message);
      const { headers } = ceHeaders(query.type, { ce_correlationid: query.correlationid });
      await producer.send({ topic: query.replyto, messages: [{
        value: JSON.stringify({ asked: query.data, answered_by: "kafkajs" }), headers }] });
      emit("answered", { query });
      if (++answered === Number(count)) setTimeout(() => process.exit(0), 100);
    },
  });
} else if (command === "ask") {
  const [type, data] = args;
  const replyTo = "_replies.kafkajs-" + uuid();
  const correlation = uuid();
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  await readFromStart(replyTo, "kafkajs-asker-" + uuid(), (message) => {
    const event = eventOf(message);
    if (event.correlationid !== correlation) return;
    emit("reply", { cloudevent: event, headers: headersOf(message), correlation });
    process.exit(0);
  });
  const { headers } = ceHeaders(type, { ce_correlationid: correlation, ce_replyto: replyTo });
  await producer.send({ topic, messages: [{ value: data, headers }] });
  emit("asked", { reply_to: replyTo, correlation });
} else {
  fail(`unknown command '${command}'`);
}
