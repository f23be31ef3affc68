// An SQS peer of the bus written with the AWS SDK for JavaScript, following docs/aws-backends.md
// ("Talking to the bus from another client"), never the bus's own code.
// usage: node sqs_peer.mjs COMMAND ENDPOINT SUBJECT ... (the commands of tests/interop/peer.mjs;
// a subject's queue is named by it with each '.' as '-', behind the bus's queue_prefix, empty)
//   listen   read the subject's queue (made here, as a service of its own would)
//   publish  one message with CloudEvents attributes, the extensions under their plain names
//   ask      a query naming a reply queue of its own; the reply
//   ask-without-reply  a query that names no reply address: "published"
import { require, emit, fail, uuid, cloudEvent, limit, pythonEnvelope } from "./peer.mjs";

const { SQSClient, CreateQueueCommand, GetQueueUrlCommand, SendMessageCommand,
        ReceiveMessageCommand, DeleteMessageCommand } = require("@aws-sdk/client-sqs");
const [command, endpoint, subject, ...args] = process.argv.slice(2);
limit(60000);
const sqs = new SQSClient({ endpoint, region: "us-east-1",
                            credentials: { accessKeyId: "test", secretAccessKey: "test" } });
const queueOf = (name) => name.replaceAll(".", "-");

async function queueUrl(name, create) {
  if (create) return (await sqs.send(new CreateQueueCommand({ QueueName: queueOf(name) }))).QueueUrl;
  return (await sqs.send(new GetQueueUrlCommand({ QueueName: queueOf(name) }))).QueueUrl;
}

// The CloudEvent an SQS message carries: ce_* attributes and the ce_extensions object.
function eventOf(message) {
  const attributes = {};
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
    if (name === "ce_extensions") Object.assign(attributes, JSON.parse(value.StringValue));
    else if (name.startsWith("ce_")) attributes[name.slice(3)] = value.StringValue;
    else if (name === "content-type") attributes.datacontenttype = value.StringValue;
  }
  attributes.data = JSON.parse(message.Body);
  return JSON.parse(JSON.stringify(cloudEvent(attributes)));
}

async function receiveOne(url) {
  for (;;) {
    const reply = await sqs.send(new ReceiveMessageCommand({ QueueUrl: url,
      MaxNumberOfMessages: 1, MessageAttributeNames: ["All"], WaitTimeSeconds: 1 }));
    for (const message of reply.Messages ?? []) {
      await sqs.send(new DeleteMessageCommand({ QueueUrl: url,
                                                ReceiptHandle: message.ReceiptHandle }));
      return message;
    }
  }
}

function attributesFor(type, extensions) {
  const text = (value) => ({ DataType: "String", StringValue: value });
  const id = uuid();
  return { id, attributes: {
    ce_specversion: text("1.0"), ce_id: text(id), ce_source: text("urn:aws-sdk-peer"),
    ce_type: text(type), "content-type": text("application/json"),
    ce_extensions: text(JSON.stringify(extensions)) } };
}

if (command === "listen") {
  const [count] = args;
  const url = await queueUrl(subject, true);
  emit("ready");
  for (let i = 0; i < Number(count); i++) emit("received", { cloudevent: eventOf(await receiveOne(url)) });
} else if (command === "publish") {
  const [type, data] = args;
  const { id, attributes } = attributesFor(type, { correlationid: "corr-" + type });
  await sqs.send(new SendMessageCommand({ QueueUrl: await queueUrl(subject, false),
                                          MessageBody: data, MessageAttributes: attributes }));
  emit("published", { id });
} else if (command === "publish-envelope") {
  const [type, data] = args;
  const { id, body } = pythonEnvelope(type, data);
  await sqs.send(new SendMessageCommand({ QueueUrl: await queueUrl(subject, false),
                                          MessageBody: body }));
  emit("published", { id });
} else if (command === "ask" || command === "ask-without-reply") {
  const [type, data] = args;
  const correlation = uuid();
  const replyTo = "_replies.sdk_" + uuid().replaceAll("-", "");
  const extensions = { correlationid: correlation };
  if (command === "ask") extensions.replyto = replyTo;
  const replies = command === "ask" ? await queueUrl(replyTo, true) : null;
  const { id, attributes } = attributesFor(type, extensions);
  await sqs.send(new SendMessageCommand({ QueueUrl: await queueUrl(subject, false),
                                          MessageBody: data, MessageAttributes: attributes }));
  emit(command === "ask" ? "asked" : "published", { id, correlation });
  if (replies) emit("reply", { cloudevent: eventOf(await receiveOne(replies)), correlation });
} else {
  fail(`unknown command '${command}'`);
}
