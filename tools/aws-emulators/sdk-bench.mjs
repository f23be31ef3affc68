// The AWS SDK for JavaScript doing what the aws benchmark has the bus do, for the baseline of
// the same run. Prints {"seconds": ..., "cpu_us": ...} for the timed part only (not Node's
// start-up): its wall time, and this process's CPU microseconds (user and system) per message.
// usage: MARTY_AWS_EMULATORS_DIR=... node sdk-bench.mjs publish ENDPOINT TOPIC_ARN COUNT CONCURRENCY BYTES TYPE
//        MARTY_AWS_EMULATORS_DIR=... node sdk-bench.mjs send ENDPOINT QUEUE_URL COUNT CONCURRENCY BYTES TYPE
//        MARTY_AWS_EMULATORS_DIR=... node sdk-bench.mjs consume ENDPOINT QUEUE_URL COUNT CONCURRENCY
import { randomUUID } from "crypto";
import { createRequire } from "module";

const require = createRequire(`${process.env.MARTY_AWS_EMULATORS_DIR}/package.json`);
const { SNSClient, PublishCommand } = require("@aws-sdk/client-sns");
const { SQSClient, SendMessageCommand, ReceiveMessageCommand, DeleteMessageCommand } =
  require("@aws-sdk/client-sqs");

const [mode, endpoint, target, countText, concurrencyText, bytesText, typeText] =
  process.argv.slice(2);
const count = Number(countText);
const concurrency = Number(concurrencyText);
// The bus's payload: a JSON object of BYTES bytes ({"p":"xxx..."}), serialized on every send as
// the bus serializes its caller's value.
const value = { p: "x".repeat(Math.max(0, Number(bytesText ?? 8) - 8)) };
const type = typeText ?? "bench_event";
const options = {
  endpoint, region: "us-east-1", credentials: { accessKeyId: "test", secretAccessKey: "test" },
};
const sns = new SNSClient(options);
const sqs = new SQSClient(options);

// The same CloudEvents attributes the bus sends with each message, in its order and of its
// sizes: a fresh UUID and time per message (RFC 3339 with microseconds, as the bus writes it),
// its default source, the message type.
const attributes = () => {
  const text = (s) => ({ DataType: "String", StringValue: s });
  return {
    ce_specversion: text("1.0"), ce_id: text(randomUUID()), ce_source: text("marty-service"),
    ce_type: text(type), ce_time: text(`${new Date().toISOString().slice(0, -1)}000Z`),
    "content-type": text("application/json"),
  };
};
let next = 0;
let done = 0;
const operations = {
  publish: async () => {
    while (next++ < count) {
      await sns.send(new PublishCommand({
        TopicArn: target, Message: JSON.stringify(value), MessageAttributes: attributes(),
      }));
      ++done;
    }
  },
  send: async () => {
    while (next++ < count) {
      await sqs.send(new SendMessageCommand({
        QueueUrl: target, MessageBody: JSON.stringify(value), MessageAttributes: attributes(),
      }));
      ++done;
    }
  },
  // One message per receive, as the bus reads the emulator (its batches share a receipt
  // handle), with the bus's receive parameters; each message's attributes and body are read;
  // deletes overlap the next receive, as the bus's acks do.
  consume: async () => {
    const deletes = [];
    while (done < count) {
      const reply = await sqs.send(new ReceiveMessageCommand({
        QueueUrl: target, MaxNumberOfMessages: 1, WaitTimeSeconds: 1, VisibilityTimeout: 2,
        AttributeNames: ["ApproximateReceiveCount", "MessageGroupId"],
        MessageAttributeNames: ["All"],
      }));
      for (const message of reply.Messages ?? []) {
        for (const [name, attribute] of Object.entries(message.MessageAttributes ?? {})) {
          if (!name || attribute.StringValue === undefined) throw new Error("a bad attribute");
        }
        if (!message.Body) throw new Error("a message without its body");
        deletes.push(sqs.send(new DeleteMessageCommand({
          QueueUrl: target, ReceiptHandle: message.ReceiptHandle,
        })));
        ++done;
      }
    }
    await Promise.all(deletes);
  },
};
const start = process.hrtime.bigint();
const cpu = process.cpuUsage();
await Promise.all(Array.from({ length: concurrency }, operations[mode]));
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const used = process.cpuUsage(cpu);
console.log(JSON.stringify({ seconds, cpu_us: (used.user + used.system) / count, done }));
