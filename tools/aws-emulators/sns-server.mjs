// The SNS emulator of serverless-offline-sns on plain express, without the serverless framework.
// usage: SNS_PORT=4002 node sns-server.mjs   (it delivers to SQS queues through their URLs)
import express from "express";
// The package's "exports" map hides this path from a bare import.
import { SNSServer } from "./node_modules/serverless-offline-sns/dist/sns-server.js";

const app = express();
new SNSServer((message) => {
  if (process.env.SNS_DEBUG) console.log(message);
}, app, process.env.AWS_REGION || "us-east-1", "123456789012");
app.listen(Number(process.env.SNS_PORT || 4002), "127.0.0.1");
