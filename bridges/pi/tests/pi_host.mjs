// Stands in for pi around the agent-comms extension, for one test: pi offers no way to make its sendMessage fail,
// which is what this test needs. It loads the real extension file the way pi does (jiti, pi's own TypeScript
// loader), gives it a pi API whose sendMessage records what it is given, or throws when told to, and is driven by
// JSON lines on stdin; it reports on stdout, one JSON object per line.
//
//   {"cmd": "start", "cwd": "..."}                   -> the extension's session_start handlers, then {"type": "started"}
//   {"cmd": "refuse", "value": true}                 -> sendMessage throws (as pi's does for a stale runtime), from
//                                                       now on: {"type": "refusing", "value": true}
//   {"cmd": "call", "id": 1, "params": {...}}        -> {"type": "result", "id": 1, "text": "...", "isError": false}
//   {"cmd": "shutdown"}                              -> the session_shutdown handlers, then {"type": "stopped"}
//   sendMessage(message, options)                    -> {"type": "sent", "text": ..., "options": ...}
//                                                       or {"type": "refused", "text": ...}

import { createInterface } from "node:readline";
import { createRequire } from "node:module";

const out = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const require = createRequire(process.argv[3]); // pi's own node_modules: its jiti
const { createJiti } = require("jiti");
let refuse = false;
const tools = new Map();
const handlers = new Map();
const pi = {
  registerTool(definition) {
    tools.set(definition.name, definition);
  },
  on(name, handler) {
    handlers.set(name, [...(handlers.get(name) ?? []), handler]);
  },
  sendMessage(message, options) {
    if (refuse) {
      out({ type: "refused", text: message.content });
      throw new Error("This extension instance is stale (the test refuses it)");
    }
    out({ type: "sent", text: message.content, options });
  },
};

const jiti = createJiti(import.meta.url);
const module = await jiti.import(process.argv[2]);
(module.default ?? module)(pi);
const fire = async (name, ctx) => {
  for (const handler of handlers.get(name) ?? []) await handler({ type: name }, ctx);
};

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.cmd === "start") {
    await fire("session_start", { cwd: command.cwd, isIdle: () => true });
    out({ type: "started" });
  } else if (command.cmd === "refuse") {
    refuse = command.value;
    // Said once in force: the extension's events come on another pipe than these commands, in no set order with them.
    out({ type: "refusing", value: refuse });
  } else if (command.cmd === "call") {
    const [tool] = tools.values();
    try {
      const result = await tool.execute(`call-${command.id}`, command.params);
      out({ type: "result", id: command.id, text: result.content[0].text, isError: false });
    } catch (error) {
      out({ type: "result", id: command.id, text: error.message, isError: true });
    }
  } else if (command.cmd === "shutdown") {
    await fire("session_shutdown", {});
    out({ type: "stopped" });
  }
}
