// A NATS peer of the bus written with nats.js, following docs/wire-format.md ("Talking to the
// bus from another client"), never the bus's own code.
// usage: node nats_peer.mjs COMMAND NATS_URL SUBJECT ... (the commands of tests/interop/peer.mjs)
//   listen   a core subscription
//   publish  a JetStream publish in binary mode
//   respond  answer queries as a member of the service's queue group
//   ask      a NATS request
import { require, emit, fail, uuid, cloudEvent, limit, pythonEnvelope } from "./peer.mjs";

const { connect, headers: makeHeaders, StringCodec } = require("nats");
const codec = StringCodec();
const [command, url, subject, ...args] = process.argv.slice(2);
limit(60000);

function headersOf(msg) {
  const out = {};
  if (msg.headers) for (const [name, values] of msg.headers) out[name.toLowerCase()] = values[0];
  return out;
}

// The CloudEvent a binary-mode NATS message carries, checked by the CloudEvents SDK.
function eventOf(msg) {
  const h = headersOf(msg);
  const attributes = { data: JSON.parse(codec.decode(msg.data)) };
  for (const [name, value] of Object.entries(h)) {
    if (name.startsWith("ce-")) attributes[name.slice(3)] = value;
  }
  if (h["content-type"]) attributes.datacontenttype = h["content-type"];
  return JSON.parse(JSON.stringify(cloudEvent(attributes)));
}

function ceHeaders(type, extra = {}) {
  const h = makeHeaders();
  const id = uuid();
  h.set("ce-specversion", "1.0");
  h.set("ce-id", id);
  h.set("ce-source", "urn:nats-js-peer");
  h.set("ce-type", type);
  h.set("content-type", "application/json");
  for (const [name, value] of Object.entries(extra)) h.set(name, value);
  return { h, id };
}

const nc = await connect({ servers: url });
if (command === "listen") {
  const [count] = args;
  const sub = nc.subscribe(subject, { max: Number(count) });
  await nc.flush();
  emit("ready");
  for await (const msg of sub) emit("received", { cloudevent: eventOf(msg) });
  await nc.drain();
} else if (command === "publish") {
  const [type, data] = args;
  const { h, id } = ceHeaders(type, { "ce-correlationid": "corr-" + type });
  await nc.jetstream().publish(subject, codec.encode(data), { headers: h, msgID: id });
  emit("published", { id });
  await nc.drain();
} else if (command === "publish-envelope") {
  const [type, data] = args;
  const { id, body } = pythonEnvelope(type, data);
  await nc.jetstream().publish(subject, codec.encode(body));
  emit("published", { id });
  await nc.drain();
} else if (command === "respond") {
  const [queue, count] = args;
  const sub = nc.subscribe(subject, { queue, max: Number(count) });
  await nc.flush();
  emit("ready");
  for await (const msg of sub) {
    const query = eventOf(msg);
    const { h } = ceHeaders(query.type, { "ce-correlationid": query.correlationid });
    msg.respond(codec.encode(JSON.stringify({ asked: query.data, answered_by: "nats.js" })),
      { headers: h });
    emit("answered", { query });
  }
  await nc.drain();
} else if (command === "ask") {
  const [type, data] = args;
  const correlation = uuid();
  const { h } = ceHeaders(type, { "ce-correlationid": correlation });
  const reply = await nc.request(subject, codec.encode(data), { headers: h, timeout: 10000 });
  emit("reply", { cloudevent: eventOf(reply), headers: headersOf(reply), correlation });
  await nc.drain();
} else {
  fail(`unknown command '${command}'`);
}
