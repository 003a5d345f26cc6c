// Stands in for OpenCode around the agent-comms plugin, for the tests: OpenCode itself would need a model to call
// a tool. It loads the real plugin file, gives it a client whose session.promptAsync records what it is sent, and
// is driven by JSON lines on stdin; it reports on stdout, one JSON object per line.
//
//   {"cmd": "call", "id": 1, "session": "ses_1", "params": {...}}  -> {"type": "result", "id": 1, "text": "..."}
//        (the parameters are checked against the tool's zod arguments first, as OpenCode does)
//   {"cmd": "event", "event": {...}}                               -> the plugin's event hook
//   {"cmd": "refuse_prompts", "value": true}                       -> promptAsync answers with an error
//   {"cmd": "dispose"}                                             -> {"type": "disposed"}
//   promptAsync(...)                                               -> {"type": "prompted", "session", "body"}

import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const out = (message) => process.stdout.write(JSON.stringify(message) + "\n");
let refuse = false;
const client = {
  session: {
    async promptAsync({ path, body }) {
      if (refuse) return { error: { name: "BadRequestError", data: { message: "refused by the test" } } };
      out({ type: "prompted", session: path.id, body });
      return { data: undefined };
    },
  },
};

const module = await import(pathToFileURL(process.argv[2]).href);
const plugins = Object.values(module).filter((value) => typeof value === "function");
if (plugins.length !== 1) throw new Error(`expected one exported plugin, found ${plugins.length}`);
const hooks = await plugins[0]({ client, directory: process.cwd(), worktree: process.cwd(), project: {} });
const [name, definition] = Object.entries(hooks.tool ?? {})[0];
// The zod that the plugin's own @opencode-ai/plugin carries, found from the plugin file as OpenCode would.
const plugin = join(dirname(process.argv[2]), "..", "node_modules", "@opencode-ai", "plugin", "dist", "tool.js");
const { tool } = await import(pathToFileURL(plugin).href);
const z = tool.schema;
out({ type: "loaded", tool: name, args: Object.keys(definition.args) });

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.cmd === "call") {
    let text;
    try {
      const params = z.object(definition.args).parse(command.params);
      text = await definition.execute(params, { sessionID: command.session, messageID: "msg", agent: "build" });
    } catch (error) {
      text = `invalid arguments: ${error.message}`;
    }
    out({ type: "result", id: command.id, text });
  } else if (command.cmd === "event") {
    await hooks.event({ event: command.event });
  } else if (command.cmd === "refuse_prompts") {
    refuse = command.value;
  } else if (command.cmd === "dispose") {
    await hooks.dispose?.();
    out({ type: "disposed" });
  }
}
