// What every interop peer shares: loading the brokers' own clients from the pinned packages
// (MARTY_INTEROP_NODE_PATH, see scripts/js-deps.sh) and reporting on stdout, one JSON object
// per line with an "event" member, which the C++ tests wait for (tests/interop/node_peer.hpp).
//
// Every peer takes the same commands, `node <broker>_peer.mjs COMMAND ADDRESS SUBJECT ...`,
// and maps the bus's subject to its broker's names by docs/wire-format.md:
//   listen  ADDRESS SUBJECT COUNT        read our events: "ready", then "received" {cloudevent}
//   publish ADDRESS SUBJECT TYPE JSON    one event, correlation id "corr-TYPE": "published" {id}
//   respond ADDRESS SUBJECT SERVICE N    answer N queries with {asked, answered_by}: "ready",
//                                        then "answered" {query} each
//   ask     ADDRESS SUBJECT TYPE JSON    one query with a correlation id of its own:
//                                        "reply" {cloudevent, correlation, ...}
//   publish-envelope ADDRESS SUBJECT TYPE JSON   what a service running the Python original
//                                        sends: pythonEnvelope() as the whole body, no
//                                        CloudEvents attributes: "published" {id}
import { createRequire } from "module";
import { randomUUID } from "crypto";

const modules = process.env.MARTY_INTEROP_NODE_PATH;
if (!modules) {
  console.error("MARTY_INTEROP_NODE_PATH is not set (source <(scripts/js-deps.sh))");
  process.exit(2);
}
export const require = createRequire(`${modules}/../package.json`);

export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

export function fail(why) {
  console.error(why);
  process.exit(1);
}

export const uuid = randomUUID;

// Validates an event with the CloudEvents SDK (throws naming what is wrong) and returns it.
export function cloudEvent(attributes) {
  const { CloudEvent } = require("cloudevents");
  const event = new CloudEvent(attributes, true);
  event.validate();
  return event;
}

// Ends the process after `ms` with a failure, so that a peer never outlives its test.
export function limit(ms) {
  setTimeout(() => fail(`gave up after ${ms} ms`), ms).unref();
}

// The Python original's wire format, `{"data", "metadata"}`, as its services write it (naive
// UTC timestamp, ttl in float seconds).
export function pythonEnvelope(type, data) {
  const id = uuid();
  const body = JSON.stringify({ data: JSON.parse(data), metadata: {
    message_id: id, correlation_id: "corr-py", causation_id: "cause-py",
    timestamp: "2026-12-07T10:00:00.123456", ttl: 30.0, priority: 3,
    content_type: "application/json", headers: { tenant: "acme" }, routing_key: null,
    reply_to: null, message_type: type, source: "python-service" } });
  return { id, body };
}
