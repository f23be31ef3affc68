// Reads messages from an SQS queue with the AWS SDK for JavaScript, deleting each, and prints
// them as one JSON array of {body, attributes, system} (string message attributes by name, and
// SQS's system attributes: MessageGroupId, MessageDeduplicationId on FIFO queues). The tests
// use it to check that what the AWS backends write is what AWS's own SDK reads.
// usage: MARTY_AWS_EMULATORS_DIR=build/js/aws-emulators node read-queue.mjs ENDPOINT QUEUE_URL COUNT
import { createRequire } from "module";

const require = createRequire(`${process.env.MARTY_AWS_EMULATORS_DIR}/package.json`);
const { SQSClient, ReceiveMessageCommand, DeleteMessageCommand } = require("@aws-sdk/client-sqs");

const [endpoint, queueUrl, count] = process.argv.slice(2);
const sqs = new SQSClient({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
});
const read = [];
const deadline = Date.now() + 15000;
while (read.length < Number(count) && Date.now() < deadline) {
  const reply = await sqs.send(new ReceiveMessageCommand({
    QueueUrl: queueUrl, MaxNumberOfMessages: 1, MessageAttributeNames: ["All"], WaitTimeSeconds: 1,
    AttributeNames: ["All"],
  }));
  for (const message of reply.Messages ?? []) {
    const attributes = {};
    for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
      attributes[name] = value.StringValue;
    }
    read.push({ body: message.Body, attributes, system: message.Attributes ?? {} });
    await sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle }));
  }
  if (!reply.Messages?.length) await new Promise((resolve) => setTimeout(resolve, 100));
}
console.log(JSON.stringify(read));
