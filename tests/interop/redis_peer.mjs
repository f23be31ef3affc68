// A Redis peer of the bus written with ioredis, following docs/wire-format.md ("Talking to the
// bus from another client"), never the bus's own code.
// usage: node redis_peer.mjs COMMAND REDIS_URL SUBJECT ... (the commands of tests/interop/peer.mjs;
// keys and channels are the subject behind the bus's default key_prefix, "marty:")
//   listen   SUBSCRIBE to the event's channel: each structured CloudEvent
//   publish  XADD one event in binary mode to its Stream
//   respond  answer queries read with XREADGROUP ... BLOCK ... > as the service's group
//   ask      XADD a query naming a reply channel of its own; the reply
import { require, emit, fail, uuid, cloudEvent, limit, pythonEnvelope } from "./peer.mjs";

const Redis = require("ioredis");
const [command, url, subject, ...args] = process.argv.slice(2);
const prefix = "marty:";
const key = prefix + subject;
limit(60000);

function fieldsOf(flat) {
  const fields = {};
  for (let i = 0; i < flat.length; i += 2) fields[flat[i]] = flat[i + 1];
  return fields;
}

if (command === "listen") {
  const [count] = args;
  const redis = new Redis(url);
  let seen = 0;
  redis.on("message", (_, text) => {
    const event = cloudEvent(JSON.parse(text));
    emit("received", { cloudevent: JSON.parse(JSON.stringify(event)) });
    if (++seen === Number(count)) process.exit(0);
  });
  await redis.subscribe(key);
  emit("ready");
} else if (command === "publish") {
  const [type, data] = args;
  const redis = new Redis(url);
  const id = uuid();
  await redis.xadd(key, "*", "ce-specversion", "1.0", "ce-id", id, "ce-source",
    "urn:ioredis-peer", "ce-type", type, "content-type", "application/json",
    "ce-correlationid", "corr-" + type, "data", data);
  emit("published", { id });
  process.exit(0);
} else if (command === "publish-envelope") {
  const [type, data] = args;
  const redis = new Redis(url);
  const { id, body } = pythonEnvelope(type, data);
  await redis.xadd(key, "*", "data", body);
  emit("published", { id });
  process.exit(0);
} else if (command === "respond") {
  const [group, count] = args;
  const reader = new Redis(url);
  const writer = new Redis(url);
  try {
    await reader.xgroup("CREATE", key, group, "$", "MKSTREAM");
  } catch (error) {
    if (!String(error).includes("BUSYGROUP")) throw error;
  }
  emit("ready");
  let answered = 0;
  while (answered < Number(count)) {
    const reply = await reader.xreadgroup("GROUP", group, "ioredis-responder", "COUNT", 1,
      "BLOCK", 1000, "STREAMS", key, ">");
    if (!reply) continue;
    for (const [entryId, flat] of reply[0][1]) {
      const query = fieldsOf(flat);
      const answer = {
        specversion: "1.0", id: uuid(), source: "urn:ioredis-responder", type: query["ce-type"],
        datacontenttype: "application/json", correlationid: query["ce-correlationid"],
        data: { asked: JSON.parse(query.data), answered_by: "ioredis" },
      };
      await writer.publish(prefix + query["ce-replyto"], JSON.stringify(answer));
      await reader.xack(key, group, entryId);
      emit("answered", { query });
      answered++;
    }
  }
  process.exit(0);
} else if (command === "ask") {
  const [type, data] = args;
  const listener = new Redis(url);
  const writer = new Redis(url);
  const replyTo = "_replies.ioredis-" + uuid();
  const correlation = uuid();
  listener.on("message", (_, text) => {
    const event = JSON.parse(text);
    if (event.correlationid !== correlation) return;
    emit("reply", { cloudevent: event, correlation });
    process.exit(0);
  });
  await listener.subscribe(prefix + replyTo);
  await writer.xadd(key, "*", "ce-specversion", "1.0", "ce-id", uuid(), "ce-source",
    "urn:ioredis-asker", "ce-type", type, "content-type", "application/json",
    "ce-correlationid", correlation, "ce-replyto", replyTo, "data", data);
  emit("asked", { reply_to: replyTo, correlation });
} else {
  fail(`unknown command '${command}'`);
}
