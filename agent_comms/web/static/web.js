// agent-comms web: the page. Everything from the mesh is put on the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "agent-comms-token";
const SEEN_KEY = "agent-comms-seen";
const $ = (id) => document.getElementById(id);

// The token comes in the URL fragment (never sent to any server); it is kept for this tab only, and the
// fragment is taken off the address bar so it is not in the history or a copied link.
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    history.replaceState(null, "", location.pathname);
    return given;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

// The token itself never leaves the page: it only keys an HMAC (a key WebCrypto will not give back), with which
// the server proves it knows the token before the page proves it too (agent_comms/web/handshake.py). The page says
// which token it holds by a key id (an HMAC of a fixed label), so a relaunch that still accepts the previous
// launch's token can prove that one; it then hands the page its own token, which the page keeps instead.
const SERVER_LABEL = "agent-comms web server";
const PAGE_LABEL = "agent-comms web page";
const KEY_ID_LABEL = "agent-comms web key id";
const KEY_ID_CHARS = 16;
const HANDSHAKE_TIMEOUT = 15000;
const ENDED = "this page's session ended: open the new link printed by agent-comms web";
const encoder = new TextEncoder();
const token = takeToken();

function importKey(secret) {
  return secret && crypto.subtle
    ? crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"])
    : null;
}

let key = importKey(token);
let state = null;
let current = null; // "#room" or "@agent-id"
let replyTo = null;
let seen = new Set(JSON.parse(sessionStorage.getItem(SEEN_KEY) || "null") || []);
let firstState = !sessionStorage.getItem(SEEN_KEY);
let retry = 250;
let live = null; // the socket that passed the handshake
let ended = false;
let serial = 0;
const waiting = new Map(); // action id -> its promise's resolve

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function setConnection(text, kind) {
  const box = $("connection");
  box.textContent = text;
  box.dataset.state = kind;
}

function notice(text, isError) {
  const box = $("notice");
  box.textContent = text || "";
  box.classList.toggle("error", !!isError);
}

// ------------------------------------------------------------------ the live connection

function nonce() {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function sign(macKey, ...parts) {
  const mac = await crypto.subtle.sign("HMAC", await macKey, encoder.encode(parts.join("\n")));
  return [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function sameText(a, b) {
  if (typeof a !== "string" || a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

// Whatever answers on this port cannot prove it knows the token (a new launch has a new one, or another program
// took the port): forget the token and stop; only the link the new launch printed opens a new session.
function endSession(socket) {
  ended = true;
  key = null;
  sessionStorage.removeItem(TOKEN_KEY);
  setConnection(ENDED, "ended");
  if (socket) socket.close();
}

function connect() {
  if (ended) return;
  if (!key) {
    setConnection(token ? "this browser offers no WebCrypto on this page" : "no key: open the link agent-comms web printed",
      "refused");
    return;
  }
  const socket = new WebSocket(`ws://${location.host}/ws`);
  const mine = nonce();
  const macKey = key;
  let phase = "hello"; // then "checking" (the server's proof), "proved" (the page's sent), "live"
  const silent = setTimeout(() => socket.close(), HANDSHAKE_TIMEOUT); // a server that never answers: retry later
  socket.onopen = async () => {
    const id = (await sign(macKey, KEY_ID_LABEL)).slice(0, KEY_ID_CHARS);
    if (ended || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "hello", nonce: mine, key: id }));
  };
  socket.onmessage = async (message) => {
    if (ended) return;
    if (phase === "hello") {
      phase = "checking";
      let challenge = null;
      try { challenge = JSON.parse(message.data); } catch (_) { challenge = null; }
      if (!challenge || challenge.type !== "challenge" || typeof challenge.nonce !== "string"
          || challenge.nonce.length > 128) {
        endSession(socket);
        return;
      }
      if (!sameText(challenge.proof, await sign(macKey, SERVER_LABEL, mine, challenge.nonce))) {
        endSession(socket);
        return;
      }
      const proof = await sign(macKey, PAGE_LABEL, challenge.nonce, mine);
      if (ended || socket.readyState !== WebSocket.OPEN) return;
      socket.send(JSON.stringify({ type: "proof", proof }));
      phase = "proved";
      return;
    }
    if (phase === "checking") return; // nothing may come before the page's proof: only an impostor sends it
    const data = JSON.parse(message.data);
    if (data.type === "rotate" && phase === "proved" && typeof data.token === "string") {
      // This launch accepted the previous launch's token; from now on the page holds this launch's own.
      sessionStorage.setItem(TOKEN_KEY, data.token);
      key = importKey(data.token);
      return;
    }
    if (data.type === "answer") {
      const resolve = waiting.get(data.id);
      waiting.delete(data.id);
      if (resolve) resolve(data);
      return;
    }
    if (phase === "proved") {
      clearTimeout(silent);
      phase = "live";
      live = socket;
      retry = 250;
      setConnection("live", "live");
    }
    render(data);
  };
  socket.onclose = (closed) => {
    clearTimeout(silent);
    if (live === socket) live = null;
    for (const resolve of waiting.values()) resolve({ ok: false, error: "the connection was lost; try again" });
    waiting.clear();
    if (ended) return;
    if (closed.code === 4401) {
      endSession(null);
      return;
    }
    setConnection("reconnecting…", "connecting");
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 5000);
  };
}

// An action of the person, sent on the live socket; its answer.
async function post(request) {
  let data;
  if (!live) {
    data = { ok: false, error: ended ? ENDED : "not connected; try again once the page is live" };
  } else {
    const id = ++serial;
    const socket = live;
    data = await new Promise((resolve) => {
      waiting.set(id, resolve);
      socket.send(JSON.stringify({ type: "act", id, request }));
    });
  }
  if (!data.ok) notice(data.error || data.text || "refused", true);
  else notice(request.command ? data.text : "", false);
  return data;
}

// ------------------------------------------------------------------ drawing the snapshot

function conversation(key) {
  return state ? state.conversations.find((c) => c.key === key) : undefined;
}

function unread(conv) {
  return conv.messages.filter((m) => !m.mine && !seen.has(m.id)).length;
}

function markSeen(conv) {
  if (!conv) return;
  for (const m of conv.messages) seen.add(m.id);
  sessionStorage.setItem(SEEN_KEY, JSON.stringify([...seen].slice(-5000)));
}

function render(next) {
  state = next;
  if (firstState) {
    for (const conv of state.conversations) markSeen(conv);
    firstState = false;
  }
  if (current && current.startsWith("#") && !conversation(current)) current = null;
  if (!current && state.conversations.length) current = state.conversations[0].key;
  markSeen(conversation(current));
  $("me").textContent = `you are ${state.me.name} (${state.me.id}), ${state.me.status}`;
  drawAgents();
  drawRooms();
  drawDms();
  drawPane();
  drawActivity();
}

function badge(conv) {
  const count = conv ? unread(conv) : 0;
  return count ? el("span", { class: "badge", text: String(count), data: { unread: count } }) : null;
}

function drawAgents() {
  const list = $("agents");
  list.replaceChildren(...state.agents.map((agent) => el("li",
    { data: { agentId: agent.id, online: agent.online, status: agent.status }, title: `${agent.harness} · ${agent.cwd}`,
      onclick: () => select(`@${agent.id}`) },
    el("span", { class: "dot" }),
    el("span", { class: "name", text: agent.name }),
    el("span", { class: "sub", text: agent.status }),
    badge(conversation(`@${agent.id}`)))));
  if (!state.agents.length) list.append(el("li", { class: "sub", text: "nobody else yet" }));
}

function drawRooms() {
  const list = $("rooms");
  list.replaceChildren(...state.rooms.map((room) => {
    const key = `#${room.name}`;
    const action = room.joined
      ? null
      : el("button", { type: "button", text: room.invited ? "Accept" : "Join",
          onclick: (event) => { event.stopPropagation(); join(room.name); } });
    return el("li",
      { data: { room: room.name, joined: room.joined }, class: key === current ? "current" : "",
        title: room.description || room.type, onclick: () => room.joined && select(key) },
      el("span", { class: "name", text: `#${room.name}` }),
      el("span", { class: "sub", text: `${room.type} · ${room.members.length}` }),
      badge(conversation(key)), action);
  }));
  if (!state.rooms.length) list.append(el("li", { class: "sub", text: "no rooms yet" }));
}

function drawDms() {
  const list = $("dms");
  const dms = state.conversations.filter((c) => c.kind === "dm");
  list.replaceChildren(...dms.map((conv) => el("li",
    { data: { partner: conv.partner }, class: conv.key === current ? "current" : "", onclick: () => select(conv.key) },
    el("span", { class: "name", text: conv.name }), badge(conv))));
}

function receipt(message, conv) {
  if (!message.mine) return null;
  let text;
  if (conv.kind === "dm") text = message.read ? "read" : message.delivered ? "delivered" : "sent";
  else text = message.readers ? `read by ${message.read}/${message.readers}` : "sent";
  return el("span", { class: "receipt", text, data: { receipt: text } });
}

function drawPane() {
  const conv = conversation(current);
  const agent = current && current.startsWith("@") ? state.agents.find((a) => `@${a.id}` === current) : null;
  const room = current && current.startsWith("#") ? state.rooms.find((r) => `#${r.name}` === current) : null;
  $("title").textContent = room ? `#${room.name}` : agent ? `${agent.name} (${agent.status})`
    : conv ? conv.name : "Pick a room or an agent";
  $("leave").hidden = !(room && room.joined);
  $("members").textContent = room
    ? `${room.type}${room.description ? " · " + room.description : ""} · ${room.members.map((m) => m.name).join(", ")}`
    : agent ? `${agent.harness} · ${agent.cwd}` : "";
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const byId = new Map((conv ? conv.messages : []).map((m) => [m.id, m]));
  list.replaceChildren(...(conv ? conv.messages : []).map((m) => {
    const quoted = m.reply_to && byId.get(m.reply_to);
    return el("li", { class: m.mine ? "mine" : "", data: { messageId: m.id } },
      quoted ? el("div", { class: "quote", text: `${quoted.from_name}: ${quoted.content.slice(0, 80)}` }) : null,
      el("div", { class: "meta" },
        el("span", { class: "from", text: m.from_name }),
        el("span", { text: clock(m.time) }),
        receipt(m, conv),
        el("button", { type: "button", class: "reply-link", text: "reply", onclick: () => startReply(m) })),
      el("div", { class: "content", text: m.content }));
  }));
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function drawActivity() {
  const list = $("activity");
  list.replaceChildren(...state.activity.slice().reverse().map((line) =>
    el("li", { data: { kind: line.kind, line: line.id }, text: line.text })));
}

// ------------------------------------------------------------------ what the person does

function select(key) {
  current = key;
  replyTo = null;
  $("replying").hidden = true;
  if (state) render(state);
  $("text").focus();
}

function startReply(message) {
  replyTo = message.id;
  $("replying-text").textContent = `replying to ${message.from_name}: ${message.content.slice(0, 60)}`;
  $("replying").hidden = false;
  $("text").focus();
}

async function join(room) {
  const answer = await post({ call: { action: "join_room", room } });
  if (answer.ok) select(`#${room}`);
}

async function send(event) {
  event.preventDefault();
  const box = $("text");
  const text = box.value;
  if (!text.trim()) return;
  let answer;
  if (text.startsWith("/") && !text.startsWith("//")) {
    answer = await post({ command: text });
  } else if (!current) {
    notice("Pick a room or an agent first.", true);
    return;
  } else {
    const content = text.startsWith("//") ? text.slice(1) : text;
    const call = current.startsWith("#")
      ? { action: "send", target: current.slice(1), content }
      : { action: "dm", target: current.slice(1), content };
    if (replyTo) call.replyTo = replyTo;
    answer = await post({ call });
  }
  if (answer.ok) {
    box.value = "";
    replyTo = null;
    $("replying").hidden = true;
  }
}

async function create(event) {
  event.preventDefault();
  const room = $("create-name").value.trim().replace(/^#/, "");
  const answer = await post({ call: { action: "create_room", room, type: $("create-type").value } });
  if (answer.ok) {
    $("create-name").value = "";
    select(`#${room}`);
  }
}

$("leave").addEventListener("click", async () => {
  if (!current || !current.startsWith("#")) return;
  const answer = await post({ call: { action: "leave_room", room: current.slice(1) } });
  if (answer.ok) select(null);
});
$("composer").addEventListener("submit", send);
$("create").addEventListener("submit", create);
$("replying-cancel").addEventListener("click", () => { replyTo = null; $("replying").hidden = true; });
$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
connect();
