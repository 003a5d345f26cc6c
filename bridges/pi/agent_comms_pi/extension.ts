// agent-comms for pi: the agent_comms tool, and messages from other agents pushed into the session.
//
// Written by `agent-comms setup pi` (package agent-comms-pi); `agent-comms remove pi` takes it away again.
// It starts the Python bridge (`agent-comms bridge pi`, line-delimited JSON on stdin/stdout) for the session,
// relays the model's tool calls to it, and brings every event the bridge pushes into the session with
// pi.sendMessage, once: the bridge is told an event was shown only after pi took it, so its sender's read receipt
// means the model was given it. On pi's session_shutdown the bridge leaves the mesh.
//
// Standalone on purpose: Node built-ins only, no npm packages, so it loads wherever pi runs.

import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";

/** Actions that change nothing: asked again of a new bridge when the bridge died with one pending. */
const READ_ONLY = new Set(["whoami", "list_agents", "list_rooms", "read_room"]);

// Replaced by the setup command: the absolute bridge command of the installation, and the tool's schema.
const CONFIG: {
  command: string[];
  tool: { name: string; description: string; parameters: Record<string, unknown> };
} = /*AGENT_COMMS_CONFIG*/ { command: ["agent-comms", "bridge", "pi"], tool: { name: "agent_comms", description: "", parameters: { type: "object", properties: {} } } } /*END_AGENT_COMMS_CONFIG*/;

const CUSTOM_TYPE = "agent-comms";
const ACTIONABLE = new Set(["dm", "room_message", "room_invite"]);
const SHOWN_LIMIT = 10000;
/** At most this many events pi did not take wait in the extension (each once, by event id) for the next tool result.
 * An event past it is left with the bridge, unread (nothing is lost), and asked for again (`resend`) once the waiting
 * ones went out with a tool result. */
export const WAITING_LIMIT = 50;
const STOP_GRACE_MS = 3000;

type Json = Record<string, any>;
type Pending = { resolve: (message: Json) => void; reject: (error: Error) => void };

/** One bridge process: requests out, results and events in, one JSON object per line. */
class Bridge {
  private child: ChildProcessWithoutNullStreams | undefined;
  private buffer = "";
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private stderrTail: string[] = [];
  private exited: Promise<void> = Promise.resolve();
  ready: Promise<Json>;
  private markReady: (agent: Json) => void = () => {};
  private failReady: (error: Error) => void = () => {};

  constructor(private onEvent: (message: Json) => void) {
    this.ready = this.newReady();
  }

  private newReady(): Promise<Json> {
    const ready = new Promise<Json>((resolve, reject) => {
      this.markReady = resolve;
      this.failReady = reject;
    });
    ready.catch(() => {}); // a bridge that never comes up is reported by the calls that wait for it
    return ready;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  start(cwd: string): void {
    if (this.child) return;
    const [program, ...args] = CONFIG.command;
    args.push("--harness-pid", String(process.pid));
    if (process.env.AGENT_COMMS_NAME) args.push("--name", process.env.AGENT_COMMS_NAME);
    const child = spawn(program, args, { cwd, env: process.env, stdio: ["pipe", "pipe", "pipe"] });
    this.child = child;
    this.buffer = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => this.receive(chunk));
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      this.stderrTail = [...this.stderrTail, ...chunk.split("\n").filter(Boolean)].slice(-5);
    });
    child.stdin.on("error", () => {}); // a bridge that died: reported through "exit"
    this.exited = new Promise<void>((resolve) => {
      const gone = (code: number | null, signal: string | null) => {
        if (this.child !== child) return resolve();
        this.child = undefined;
        const why = `agent-comms bridge exited (${signal ?? `status ${code}`})${this.stderrTail.length ? ": " + this.stderrTail.join(" / ") : ""}`;
        this.failReady(new Error(why));
        for (const waiter of this.pending.values()) waiter.reject(new Error(why));
        this.pending.clear();
        this.ready = this.newReady();
        resolve();
      };
      child.on("exit", gone);
      child.on("error", (error: Error) => gone(null, error.message));
    });
  }

  private receive(chunk: string): void {
    this.buffer += chunk;
    let end: number;
    while ((end = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 1);
      if (!line.trim()) continue;
      let message: Json;
      try {
        message = JSON.parse(line);
      } catch {
        continue;
      }
      if (message.type === "ready") this.markReady(message.agent);
      else if (message.type === "event") this.onEvent(message);
      else if ((message.type === "result" || message.type === "error") && this.pending.has(message.id)) {
        const waiter = this.pending.get(message.id)!;
        this.pending.delete(message.id);
        waiter.resolve(message);
      } else if (message.type === "error" && message.text?.startsWith("Error: could not join")) {
        this.stderrTail.push(message.text);
      }
    }
  }

  send(message: Json): void {
    this.child?.stdin.write(JSON.stringify(message) + "\n");
  }

  async call(params: Json): Promise<Json> {
    await this.ready;
    const id = this.nextId++;
    const answer = new Promise<Json>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.send({ id, params });
    return answer;
  }

  /** Leave the mesh: ask, close stdin, and after a grace period insist. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.send({ type: "shutdown" });
    child.stdin.end();
    const timer = setTimeout(() => child.kill("SIGTERM"), STOP_GRACE_MS);
    await this.exited;
    clearTimeout(timer);
  }
}

/** How pi should deliver an event: actionable ones wake an idle session; the rest wait for the next turn. */
export function deliveryOptions(
  event: Json,
  idle: boolean,
): { triggerTurn?: boolean; deliverAs?: "steer" | "followUp" | "nextTurn" } {
  if (!ACTIONABLE.has(event.type)) return idle ? {} : { deliverAs: "nextTurn" };
  const deliverAs = event.streaming === "steer" ? "steer" : "followUp";
  return { triggerTurn: true, deliverAs };
}

export default function agentComms(pi: any): void {
  const shown = new Set<string>(); // event ids already given to pi, never given twice
  const waiting = new Map<string, Json>(); // event id -> line pi did not take: appended to the next tool result
  let leftAside = false; // an event did not fit in `waiting`: the bridge still holds it, ask for it again
  let context: any; // the latest extension context: is the agent streaming?
  let cwd = process.cwd();

  const bridge = new Bridge((message) => {
    const event: Json = message.event ?? {};
    if (typeof event.id !== "string") return;
    if (!shown.has(event.id)) {
      const idle = context?.isIdle?.() ?? true;
      try {
        pi.sendMessage(
          { customType: CUSTOM_TYPE, content: message.text, display: true, details: { event } },
          deliveryOptions(event, idle),
        );
      } catch {
        // Not shown: it stays unread until a tool result carries it. An event the bridge writes again (a new bridge,
        // a resend) is kept once; one past the limit is left with the bridge.
        if (waiting.has(event.id)) return;
        if (waiting.size < WAITING_LIMIT) waiting.set(event.id, message);
        else leftAside = true;
        return;
      }
      waiting.delete(event.id);
      shown.add(event.id);
      if (shown.size > SHOWN_LIMIT) shown.delete(shown.values().next().value as string);
    }
    bridge.send({ type: "shown", ids: [event.id] });
  });

  pi.registerTool({
    name: CONFIG.tool.name,
    label: "Agent comms",
    description: CONFIG.tool.description,
    promptSnippet: "Talk with the other coding agents on this machine: rooms, direct messages, who is online",
    parameters: CONFIG.tool.parameters,
    async execute(_toolCallId: string, params: Json) {
      if (!bridge.running) bridge.start(cwd);
      let result: Json;
      try {
        result = await bridge.call(params);
      } catch (error) {
        // The bridge died with this call pending: killed just before it (pi had not seen the exit yet) or while it
        // ran. A call that only reads is asked again of a new bridge; one that acts may have been carried out.
        const why = (error as Error).message;
        if (!READ_ONLY.has(String(params.action))) {
          throw new Error(`${why}; the call may or may not have been carried out: check before calling again`);
        }
        if (!bridge.running) bridge.start(cwd);
        result = await bridge.call(params);
      }
      let text: string = result.text;
      const drained = [...waiting.values()].filter((line) => !shown.has(line.event.id));
      waiting.clear();
      const more = leftAside;
      leftAside = false;
      if (drained.length) {
        text += `\n--- ${drained.length} new event(s) ---\n` + drained.map((line) => line.text).join("\n");
        if (more) text += "\n(more events wait: they come next)";
      }
      const markShown = () => {
        if (drained.length) {
          for (const line of drained) shown.add(line.event.id);
          bridge.send({ type: "shown", ids: drained.map((line) => line.event.id) });
        }
        if (more) bridge.send({ type: "resend" }); // after the acknowledgement: only what was left aside comes again
      };
      if (result.is_error || result.type === "error") {
        markShown();
        throw new Error(text);
      }
      markShown();
      return { content: [{ type: "text", text }], details: { data: result.data ?? {} } };
    },
  });

  pi.on("session_start", async (_event: unknown, ctx: any) => {
    context = ctx;
    cwd = ctx?.cwd ?? cwd;
    bridge.start(cwd);
  });

  // Any handler's ctx is as good as the first: keep the latest, so isIdle() is asked of the live session.
  for (const name of ["agent_start", "agent_end", "turn_start", "turn_end"]) {
    pi.on(name, async (_event: unknown, ctx: any) => {
      context = ctx;
    });
  }

  pi.on("session_shutdown", async () => {
    await bridge.stop();
  });
}
