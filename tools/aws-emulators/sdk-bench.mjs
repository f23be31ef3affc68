// The AWS SDK for JavaScript doing what the aws benchmark has the bus do, for the baseline of
// the same run. Prints {"seconds": ...} for the timed part only (not Node's start-up).
// usage: MARTY_AWS_EMULATORS_DIR=... node sdk-bench.mjs publish ENDPOINT TOPIC_ARN COUNT CONCURRENCY BYTES
//        MARTY_AWS_EMULATORS_DIR=... node sdk-bench.mjs send ENDPOINT QUEUE_URL COUNT CONCURRENCY BYTES
//        MARTY_AWS_EMULATORS_DIR=... node sdk-bench.mjs consume ENDPOINT QUEUE_URL COUNT CONCURRENCY
import { createRequire } from "module";

const require = createRequire(`${process.env.MARTY_AWS_EMULATORS_DIR}/package.json`);
const { SNSClient, PublishCommand } = require("@aws-sdk/client-sns");
const { SQSClient, SendMessageCommand, ReceiveMessageCommand, DeleteMessageCommand } =
  require("@aws-sdk/client-sqs");

const [mode, endpoint, target, countText, concurrencyText, bytesText] = process.argv.slice(2);
const count = Number(countText);
const concurrency = Number(concurrencyText);
const body = "x".repeat(Number(bytesText ?? 0));
const options = {
  endpoint, region: "us-east-1", credentials: { accessKeyId: "test", secretAccessKey: "test" },
};
const sns = new SNSClient(options);
const sqs = new SQSClient(options);

// The same CloudEvents attributes the bus sends with each message, so both sides do the same
// work (the bus also makes a fresh id and time per message).
const attributes = (n) => {
  const text = (value) => ({ DataType: "String", StringValue: value });
  return {
    ce_specversion: text("1.0"), ce_id: text(`${process.pid}-${n}-${Date.now()}`),
    ce_type: text("bench_event"), ce_source: text("urn:sdk-bench"),
    ce_time: text(new Date().toISOString()), "content-type": text("application/json"),
  };
};
let next = 0;
let done = 0;
const operations = {
  publish: async () => {
    while (next++ < count) {
      await sns.send(new PublishCommand({
        TopicArn: target, Message: body, MessageAttributes: attributes(next),
      }));
      ++done;
    }
  },
  send: async () => {
    while (next++ < count) {
      await sqs.send(new SendMessageCommand({
        QueueUrl: target, MessageBody: body, MessageAttributes: attributes(next),
      }));
      ++done;
    }
  },
  // One message per receive, as the bus reads the emulator (its batches share a receipt
  // handle); deletes overlap the next receive, as the bus's acks do.
  consume: async () => {
    const deletes = [];
    while (done < count) {
      const reply = await sqs.send(new ReceiveMessageCommand({
        QueueUrl: target, MaxNumberOfMessages: 1, WaitTimeSeconds: 1, MessageAttributeNames: ["All"],
      }));
      for (const message of reply.Messages ?? []) {
        deletes.push(sqs.send(new DeleteMessageCommand({
          QueueUrl: target, ReceiptHandle: message.ReceiptHandle,
        })));
        ++done;
      }
      if (!reply.Messages?.length) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await Promise.all(deletes);
  },
};
const start = process.hrtime.bigint();
await Promise.all(Array.from({ length: concurrency }, operations[mode]));
console.log(JSON.stringify({ seconds: Number(process.hrtime.bigint() - start) / 1e9, done }));
