// A stand-in for Claude Code's side of a channel, built on the TypeScript MCP SDK (the library Claude Code's MCP
// client is built on). Usage: node channel_client.mjs <server command> [args...]
// Starts the server over stdio, initializes, waits for the first notifications/claude/channel, and prints one
// JSON line: {"capabilities": ..., "instructions": ..., "notification": {"method", "params"}}. The SDK is found
// through NODE_PATH (ES module imports ignore NODE_PATH, so it is loaded with createRequire).
import { createRequire } from "node:module";
import path from "node:path";

const nodePath = (process.env.NODE_PATH || "").split(path.delimiter)[0];
const require = createRequire(path.join(nodePath, "noop.js"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");

const [command, ...args] = process.argv.slice(2);
const transport = new StdioClientTransport({ command, args, env: process.env, stderr: "inherit" });
const client = new Client({ name: "channel-check", version: "0.0.0" }, { capabilities: {} });

const arrived = new Promise((resolve) => {
  client.fallbackNotificationHandler = async (notification) => {
    if (notification.method === "notifications/claude/channel") resolve(notification);
  };
});
const deadline = setTimeout(() => {
  console.error("no channel notification within 60 s");
  process.exit(1);
}, 60000);

await client.connect(transport);
const notification = await arrived;
clearTimeout(deadline);
console.log(
  JSON.stringify({
    capabilities: client.getServerCapabilities(),
    instructions: client.getInstructions(),
    notification: { method: notification.method, params: notification.params },
  }),
);
await client.close();
process.exit(0);
