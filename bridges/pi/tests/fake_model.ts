// A scripted model for the pi tests: the one part of pi that cannot run here is a real LLM.
//
// Registers provider "fake" (model "scripted") on pi-ai's faux provider. Each model call looks at the messages since
// its last answer: a user prompt "CALL <json>" among them makes the model call the agent_comms tool with those
// parameters; otherwise (a tool result, a message pushed by the agent-comms extension) it answers with the text
// "SEEN: <the newest message's text>".
// Every call appends the newest message's text to the file named by FAKE_MODEL_LOG, one JSON line each.

import { appendFileSync } from "node:fs";
import { fauxAssistantMessage, fauxText, fauxToolCall, registerFauxProvider } from "@mariozechner/pi-ai";

function textOf(message: any): string {
  const content = message?.content;
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((part: any) => part?.text ?? "").join("");
  return "";
}

export default function (pi: any) {
  const faux = registerFauxProvider({ provider: "fake", models: [{ id: "scripted" }] });
  const respond = (context: any) => {
    const last = context.messages[context.messages.length - 1];
    const text = textOf(last);
    if (process.env.FAKE_MODEL_LOG) {
      appendFileSync(process.env.FAKE_MODEL_LOG, JSON.stringify({ role: last?.role, text }) + "\n");
    }
    const since = context.messages.slice(context.messages.findLastIndex((m: any) => m.role === "assistant") + 1);
    const call = since.find((m: any) => m.role === "user" && textOf(m).startsWith("CALL "));
    if (call) {
      const params = JSON.parse(textOf(call).slice(5));
      return fauxAssistantMessage(fauxToolCall("agent_comms", params), { stopReason: "toolUse" });
    }
    return fauxAssistantMessage(fauxText(`SEEN: ${text}`));
  };
  faux.setResponses(Array.from({ length: 1000 }, () => respond));
  pi.registerProvider("fake", {
    baseUrl: "http://127.0.0.1:9",
    apiKey: "unused",
    api: faux.api,
    models: [
      {
        id: "scripted",
        name: "scripted",
        reasoning: false,
        input: ["text"],
        cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
        contextWindow: 128000,
        maxTokens: 4096,
      },
    ],
  });
}
