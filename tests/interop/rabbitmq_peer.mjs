// A RabbitMQ peer of the bus written with amqplib, following docs/wire-format.md ("Talking to
// the bus from another client"), never the bus's own code.
// usage: node rabbitmq_peer.mjs COMMAND AMQP_URL SUBJECT ... (the commands of
// tests/interop/peer.mjs; the subject is the routing key, and a query queue's name)
//   listen   a queue of its own bound to marty.events
//   publish  one event to marty.events in binary mode
//   publish-plain  the same as a plain AMQP message (properties and a header, no CloudEvents)
//   respond  answer queries from the service's query queue, copying correlation_id (AMQP RPC)
//   ask      a query by direct reply-to
import { require, emit, fail, uuid, cloudEvent, limit, pythonEnvelope } from "./peer.mjs";

const amqp = require("amqplib");
const [command, url, subject, ...args] = process.argv.slice(2);
limit(60000);

// The CloudEvent an AMQP message carries in binary mode (cloudEvents:* headers), checked by the
// CloudEvents SDK.
function eventOf(msg) {
  const attributes = { data: JSON.parse(msg.content.toString()) };
  for (const [name, value] of Object.entries(msg.properties.headers ?? {})) {
    if (name.startsWith("cloudEvents:")) attributes[name.slice(12)] = String(value);
  }
  if (msg.properties.contentType) attributes.datacontenttype = msg.properties.contentType;
  return JSON.parse(JSON.stringify(cloudEvent(attributes)));
}

function ceHeaders(type, extra = {}) {
  const id = uuid();
  return { id, headers: { "cloudEvents:specversion": "1.0", "cloudEvents:id": id,
                          "cloudEvents:source": "urn:amqplib-peer", "cloudEvents:type": type,
                          ...extra } };
}

const connection = await amqp.connect(url);
const channel = await connection.createChannel();
if (command === "listen") {
  const [count] = args;
  const key = subject;
  const { queue } = await channel.assertQueue("", { exclusive: true });
  await channel.bindQueue(queue, "marty.events", key);
  let seen = 0;
  await channel.consume(queue, (msg) => {
    emit("received", { cloudevent: eventOf(msg), properties: msg.properties });
    channel.ack(msg);
    if (++seen === Number(count)) process.exit(0);
  });
  emit("ready");
} else if (command === "publish") {
  const [type, data] = args;
  const key = subject;
  const { id, headers } = ceHeaders(type, { "cloudEvents:correlationid": "corr-" + type });
  const confirm = await connection.createConfirmChannel();
  confirm.publish("marty.events", key, Buffer.from(data),
    { headers, contentType: "application/json", messageId: id, persistent: true });
  await confirm.waitForConfirms();
  emit("published", { id });
  process.exit(0);
} else if (command === "publish-envelope") {
  const [type, data] = args;
  const { id, body } = pythonEnvelope(type, data);
  const confirm = await connection.createConfirmChannel();
  confirm.publish("marty.events", subject, Buffer.from(body), { contentType: "application/json",
    persistent: true });
  await confirm.waitForConfirms();
  emit("published", { id });
  process.exit(0);
} else if (command === "publish-plain") {
  // A plain AMQP message, as any AMQP application sends one: no CloudEvents headers.
  const [type, data] = args;
  const id = uuid();
  const confirm = await connection.createConfirmChannel();
  confirm.publish("marty.events", subject, Buffer.from(data), { contentType: "text/plain",
    messageId: id, correlationId: "corr-" + type, headers: { "x-tenant": "acme" } });
  await confirm.waitForConfirms();
  emit("published", { id });
  process.exit(0);
} else if (command === "respond") {
  const [, count] = args;
  const queue = subject;
  // The service's query queue, as the bus declares it: it lives while its responders do.
  await channel.assertQueue(queue, { durable: false, autoDelete: true });
  await channel.bindQueue(queue, "marty.commands", queue);
  let answered = 0;
  await channel.consume(queue, (msg) => {
    const query = eventOf(msg);
    const { headers } = ceHeaders(query.type);
    channel.sendToQueue(msg.properties.replyTo,
      Buffer.from(JSON.stringify({ asked: query.data, answered_by: "amqplib" })),
      { headers, contentType: "application/json", correlationId: msg.properties.correlationId });
    channel.ack(msg);
    emit("answered", { query, properties: msg.properties });
    if (++answered === Number(count)) setTimeout(() => process.exit(0), 100);
  });
  emit("ready");
} else if (command === "ask") {
  const [type, data] = args;
  const queue = subject;
  const correlation = uuid();
  // Queries go to the commands exchange, routed by subject (docs/wire-format.md).
  await channel.consume("amq.rabbitmq.reply-to", (msg) => {
    emit("reply", { cloudevent: eventOf(msg), properties: msg.properties, correlation });
    process.exit(0);
  }, { noAck: true });
  const { headers } = ceHeaders(type);
  channel.publish("marty.commands", queue, Buffer.from(data), { headers,
    contentType: "application/json", correlationId: correlation,
    replyTo: "amq.rabbitmq.reply-to" });
  emit("asked", { correlation });
} else {
  fail(`unknown command '${command}'`);
}
