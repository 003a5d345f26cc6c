// agent-comms for OpenCode: the agent_comms tool, and messages from other agents pushed into the session.
//
// Written by `agent-comms setup opencode` (package agent-comms-opencode) into OpenCode's global plugin directory;
// `agent-comms remove opencode` takes it away again. It starts the Python bridge (`agent-comms bridge opencode`,
// line-delimited JSON on stdin/stdout) for this OpenCode process, relays the model's tool calls to it, and brings
// every event the bridge pushes into the active session with client.session.promptAsync: direct messages, room
// messages and invites wake the session; other events are added without a reply (noReply). An event goes to
// OpenCode once; the bridge is told it was shown only after OpenCode accepted it, so its sender's read receipt is
// honest. Events that cannot be pushed yet (no session so far, or OpenCode refused) are appended to the next
// agent_comms result instead. When OpenCode disposes the plugin or exits, the bridge leaves the mesh.
//
// Only this module's one export is a plugin: OpenCode calls every exported function as one.

import { spawn } from "node:child_process";
import { tool } from "@opencode-ai/plugin";

// Replaced by the setup command: the absolute bridge command of the installation, and the tool's schema.
const CONFIG = /*AGENT_COMMS_CONFIG*/ { command: ["agent-comms", "bridge", "opencode"], tool: { name: "agent_comms", description: "", parameters: { type: "object", properties: {} } } } /*END_AGENT_COMMS_CONFIG*/;

const ACTIONABLE = new Set(["dm", "room_message", "room_invite"]);
const SHOWN_LIMIT = 10000;
const STOP_GRACE_MS = 3000;

/** One bridge process: requests out, results and events in, one JSON object per line. */
class Bridge {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.child = undefined;
    this.buffer = "";
    this.nextId = 1;
    this.pending = new Map();
    this.stderrTail = [];
    this.exited = Promise.resolve();
    this.ready = this.newReady();
  }

  newReady() {
    const ready = new Promise((resolve, reject) => {
      this.markReady = resolve;
      this.failReady = reject;
    });
    ready.catch(() => {}); // a bridge that never comes up is reported by the calls that wait for it
    return ready;
  }

  get running() {
    return this.child !== undefined;
  }

  start(cwd) {
    if (this.child) return;
    const [program, ...args] = CONFIG.command;
    args.push("--harness-pid", String(process.pid));
    if (process.env.AGENT_COMMS_NAME) args.push("--name", process.env.AGENT_COMMS_NAME);
    const child = spawn(program, args, { cwd, env: process.env, stdio: ["pipe", "pipe", "pipe"] });
    this.child = child;
    this.buffer = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => this.receive(chunk));
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      this.stderrTail = [...this.stderrTail, ...chunk.split("\n").filter(Boolean)].slice(-5);
    });
    child.stdin.on("error", () => {}); // a bridge that died: reported through "exit"
    this.exited = new Promise((resolve) => {
      const gone = (code, signal) => {
        if (this.child !== child) return resolve();
        this.child = undefined;
        const tail = this.stderrTail.length ? ": " + this.stderrTail.join(" / ") : "";
        const why = new Error(`agent-comms bridge exited (${signal ?? `status ${code}`})${tail}`);
        this.failReady(why);
        for (const waiter of this.pending.values()) waiter.reject(why);
        this.pending.clear();
        this.ready = this.newReady();
        resolve();
      };
      child.on("exit", gone);
      child.on("error", (error) => gone(null, error.message));
    });
  }

  receive(chunk) {
    this.buffer += chunk;
    let end;
    while ((end = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 1);
      if (!line.trim()) continue;
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        continue;
      }
      if (message.type === "ready") this.markReady(message.agent);
      else if (message.type === "event") this.onEvent(message);
      else if ((message.type === "result" || message.type === "error") && this.pending.has(message.id)) {
        const waiter = this.pending.get(message.id);
        this.pending.delete(message.id);
        waiter.resolve(message);
      } else if (message.type === "error") {
        this.stderrTail.push(message.text);
      }
    }
  }

  send(message) {
    this.child?.stdin.write(JSON.stringify(message) + "\n");
  }

  async call(params) {
    await this.ready;
    const id = this.nextId++;
    const answer = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.send({ id, params });
    return answer;
  }

  /** Leave the mesh: ask, close stdin, and after a grace period insist. */
  async stop() {
    const child = this.child;
    if (!child) return;
    this.send({ type: "shutdown" });
    child.stdin.end();
    const timer = setTimeout(() => child.kill("SIGTERM"), STOP_GRACE_MS);
    await this.exited;
    clearTimeout(timer);
  }
}

/** The zod schema of one parameter, from the JSON Schema the setup command embedded. */
function argument(schema) {
  const z = tool.schema;
  let type;
  if (schema.enum) type = z.enum(schema.enum);
  else if (schema.type === "array") type = z.array(z.string());
  else if (schema.anyOf) type = z.union([z.string(), z.number().int()]);
  else type = z.string();
  if (schema.description) type = type.describe(schema.description);
  return type;
}

export const AgentComms = async ({ client, directory }) => {
  const shown = new Set(); // event ids already given to OpenCode, never given twice
  const waiting = []; // event lines not pushed yet: appended to the next tool result
  let session; // the session to wake: the last one that used the tool or that the user prompted
  let delivery = Promise.resolve(); // pushes go out one at a time, in order

  const markShown = (ids) => {
    for (const id of ids) {
      shown.add(id);
      if (shown.size > SHOWN_LIMIT) shown.delete(shown.values().next().value);
    }
    bridge.send({ type: "shown", ids });
  };

  const push = async (message) => {
    const event = message.event ?? {};
    if (typeof event.id !== "string") return;
    if (shown.has(event.id)) return markShown([event.id]);
    if (!session) return void waiting.push(message);
    try {
      const answer = await client.session.promptAsync({
        path: { id: session },
        body: { noReply: !ACTIONABLE.has(event.type), parts: [{ type: "text", text: message.text }] },
      });
      if (answer?.error) throw new Error(JSON.stringify(answer.error));
    } catch {
      return void waiting.push(message); // not shown: it stays unread until a tool result carries it
    }
    markShown([event.id]);
  };

  const bridge = new Bridge((message) => {
    delivery = delivery.then(() => push(message)).catch(() => {});
  });
  bridge.start(directory);

  const args = Object.fromEntries(
    Object.entries(CONFIG.tool.parameters.properties ?? {}).map(([name, schema]) => [
      name,
      name === "action" ? argument(schema) : argument(schema).optional(),
    ]),
  );

  return {
    tool: {
      [CONFIG.tool.name]: tool({
        description: CONFIG.tool.description,
        args,
        async execute(params, context) {
          if (context?.sessionID) session = context.sessionID;
          if (!bridge.running) bridge.start(directory);
          let result;
          try {
            result = await bridge.call(params);
          } catch (error) {
            return `Error: ${error.message}`;
          }
          let text = result.text;
          await delivery; // pushes already under way finish first, so nothing is shown twice
          const drained = waiting.splice(0).filter((line) => !shown.has(line.event?.id));
          if (drained.length) {
            text += `\n--- ${drained.length} new event(s) ---\n` + drained.map((line) => line.text).join("\n");
            markShown(drained.map((line) => line.event.id));
          }
          return text;
        },
      }),
    },
    async event({ event }) {
      const info = event?.properties?.info;
      if (event?.type === "message.updated" && info?.role === "user" && info.sessionID) session = info.sessionID;
      if (event?.type === "session.created" && info?.id && !info.parentID) session ??= info.id;
      if (event?.type === "session.deleted" && info?.id === session) session = undefined;
    },
    async dispose() {
      await bridge.stop();
    },
  };
};
