// llamadock console: reads /status (and, with the admin token, /admin/models and /admin/activity)
// and draws them. Every text from the gateway goes in with textContent (el() below), never as
// markup: model names, reasons and chat text cannot inject HTML.
"use strict";

const POLL_MS = 1500;           // one small /status read per 1.5 s, only while the tab is visible
const LISTING_EVERY = 4;        // /admin/models (images) every 4th poll, with the token
const TOKEN_KEY = "llamadock.adminToken";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
const sum = (values) => Object.values(values || {}).reduce((a, b) => a + (b || 0), 0);
const secs = (s) => (s === null || s === undefined ? "–" : s < 60 ? `${s.toFixed(s < 10 ? 2 : 0)} s`
  : s < 3600 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${(s / 3600).toFixed(1)} h`);

// --- the admin token: asked once, kept for this browser session only ---------------------------

const admin = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  forget() { sessionStorage.removeItem(TOKEN_KEY); },
  headers() { return this.token ? { authorization: `Bearer ${this.token}` } : {}; },
};

function showTokenState(text, kind) {
  const state = $("token-state");
  state.textContent = text;
  state.className = kind || "";
  $("token-forget").hidden = !admin.token;
}

function notice(text, kind) {
  const box = $("notice");
  box.hidden = !text;
  box.textContent = text || "";
  box.className = kind || "";
}

async function errorText(answer) {
  try {
    const body = await answer.json();
    return body?.error?.message || JSON.stringify(body);
  } catch { return `HTTP ${answer.status}`; }
}

// A token is checked before it is kept: a wrong one changes nothing and the page says so.
async function useToken(token) {
  const answer = await fetch("../admin/activity?limit=1", { headers: { authorization: `Bearer ${token}` } });
  if (answer.ok) {
    admin.set(token);
    showTokenState("admin", "ok");
    notice("");
    refresh();
  } else if (answer.status === 401) {
    showTokenState("wrong admin token: not kept", "bad");
  } else {
    showTokenState(await errorText(answer), "bad");
  }
}

// An admin call; a refused token is forgotten (the page goes back to read-only).
async function adminFetch(path, options) {
  const answer = await fetch("../" + path, { ...options, headers: { ...(options?.headers || {}), ...admin.headers() } });
  if (answer.status === 401) {
    admin.forget();
    showTokenState("the gateway refused the admin token: read-only", "bad");
    renderModels();
  }
  return answer;
}

// --- state, read by a cheap poll -------------------------------------------------------------------

let status = null;      // the last GatewayStatus
let listing = null;     // the last orchestrator listing (/admin/models), for images
let polls = 0;
let timer = null;
let view = "models";

async function refresh() {
  clearTimeout(timer);
  try {
    const answer = await fetch("../status", { cache: "no-store" });
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    status = await answer.json();
    const conn = $("conn");
    conn.textContent = status.orchestrator_error ? `live; orchestrator: ${status.orchestrator_error}` : "live";
    conn.className = status.orchestrator_error ? "down" : "";
    if (admin.token && status.scheduler && polls % LISTING_EVERY === 0) await readListing();  // images: orchestrator only
    if (admin.token && view === "activity") await readActivity();
    polls += 1;
    render();
  } catch (error) {
    // The gateway restarting: say so and keep polling; the page comes back by itself.
    $("conn").textContent = `gateway unreachable (${error.message}); retrying`;
    $("conn").className = "down";
  }
  if (document.visibilityState === "visible") timer = setTimeout(refresh, POLL_MS);
}

async function readListing() {
  const answer = await adminFetch("admin/models");
  listing = answer.ok ? await answer.json() : null;  // 503 without an orchestrator: no images to show
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refresh(); else clearTimeout(timer);
});

function render() {
  renderModels();
  renderPools();
  renderModelChoices();
}

// --- models ------------------------------------------------------------------------------------------

function renderModels() {
  if (!status) return;
  const scheduled = status.scheduler?.models || {};
  const images = Object.fromEntries((listing?.models || []).map((m) => [m.name, m.instance?.image || m.spec?.image || ""]));
  const rows = status.models.map((model) => {
    const s = scheduled[model.id];
    const estimate = s ? (sum(s.need_bytes) || s.estimate?.total_bytes) : null;
    const used = s?.actual_bytes ? sum(s.actual_bytes) : null;
    const state = s && s.phase !== model.state ? `${model.state} (${s.phase})` : model.state;
    let unload = "–";
    if (s?.pinned) unload = "pinned";
    else if (s && s.idle_s !== null && s.idle_s !== undefined && s.ttl_s > 0) unload = secs(Math.max(0, s.ttl_s - s.idle_s));
    const own = !model.provider;
    const disabled = !admin.token || !own;  // without an orchestrator the gateway says why
    const why = !own ? "a provider's model" : !admin.token ? "needs the admin token" : !status.scheduler ? "no orchestrator here" : null;
    return el("tr", { "data-model": model.id },
      el("td", {}, el("strong", {}, model.id),
        model.aliases.length ? el("div", { class: "sub" }, "aliases: ", model.aliases.join(", ")) : null),
      el("td", { class: `state-${model.state}` }, state,
        model.reason ? el("div", { class: "sub reason" }, model.reason) : null,
        s?.yielding_to ? el("div", { class: "sub" }, `yielding to ${s.yielding_to}`) : null),
      // Where it runs: a provider's name, or ours (with its node on a swarm).
      el("td", {}, model.provider || (status.scheduler?.several_nodes && s?.node ? `llamadock @ ${s.node}` : "llamadock")),
      el("td", { class: "num" }, `${bytes(estimate)} / ${bytes(used)}`),
      el("td", { class: "num" }, s?.ctx_size ?? "–"),
      el("td", { class: "num" }, s ? (s.parallel ?? s.limit) : "–"),
      el("td", { class: "num" }, s ? `${s.in_flight} / ${s.queued}` : "–"),
      el("td", { class: "num" }, unload),
      el("td", { class: "sub" }, images[model.id] || "–"),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "load", disabled, title: why, onclick: () => act(model.id, "load") }, "Load"), " ",
        el("button", { type: "button", class: "unload", disabled, title: why, onclick: () => act(model.id, "unload") }, "Unload"), " ",
        el("button", { type: "button", class: "restart", disabled, title: why, onclick: () => act(model.id, "restart") }, "Restart"), " ",
        el("button", { type: "button", class: "remove", disabled, title: why, onclick: () => remove(model.id) },
          removing === model.id ? "Confirm remove" : "Remove")));
  });
  // Redrawn every poll: the focused button is focused again, or a keyboard user would lose their place.
  const focused = document.activeElement?.closest?.("#models button");
  const where = focused ? [focused.closest("tr").dataset.model, focused.classList[0]] : null;
  $("models").replaceChildren(...rows);
  if (where) [...$("models").children].find((tr) => tr.dataset.model === where[0])?.querySelector(`button.${where[1]}`)?.focus();
  renderAddForm();
  const notes = [];
  if (!status.scheduler) notes.push("No orchestrator: models come from the static upstreams file; the gateway cannot load or unload them.");
  if (status.upstreams_file_error) notes.push(`Upstreams file ignored: ${status.upstreams_file_error}`);
  $("models-note").textContent = notes.join(" ");
}

// Removing stops the model and drops it from config/models.yaml: the button asks for a second
// click (within 5 s) rather than a blocking dialog.
let removing = null;
let removingTimer = null;

async function remove(model) {
  if (removing !== model) {
    removing = model;
    clearTimeout(removingTimer);
    removingTimer = setTimeout(() => { removing = null; renderModels(); }, 5000);
    renderModels();
    return;
  }
  removing = null;
  notice(`Removing ${model}…`);
  const answer = await adminFetch(`admin/models/${encodeURIComponent(model)}`, { method: "DELETE" });
  notice(answer.ok ? `${model}: removed` : `${model}: ${await errorText(answer)}`, answer.ok ? "ok" : "bad");
  refresh();
}

// The add form: the GGUF files under models/ not declared yet, as the orchestrator lists them.
function renderAddForm() {
  const form = $("add-form");
  const files = listing?.available || [];
  form.hidden = !admin.token || !listing;
  const select = $("add-file");
  if ([...select.options].map((o) => o.value).join("\n") !== files.join("\n")) {
    select.replaceChildren(...(files.length ? files.map((f) => el("option", { value: f }, f))
      : [el("option", { value: "" }, "no new GGUF files in models/")]));
  }
  $("add-send").disabled = !files.length;
}

async function add(event) {
  event.preventDefault();
  const spec = { name: $("add-name").value.trim(), model: $("add-file").value };
  const ctx = parseInt($("add-ctx").value, 10);
  if (!Number.isNaN(ctx)) spec.ctx_size = ctx;
  notice(`Adding ${spec.name} (it starts and is checked before it is kept)…`);
  const answer = await adminFetch("admin/models", { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify(spec) });
  notice(answer.ok ? `${spec.name}: added` : `${spec.name}: ${await errorText(answer)}`, answer.ok ? "ok" : "bad");
  if (answer.ok) { polls = 0; $("add-name").value = ""; }
  refresh();
}

async function act(model, action) {
  notice(`${{ load: "Loading", unload: "Unloading", restart: "Restarting" }[action]} ${model}…`);
  const answer = await adminFetch(`admin/models/${encodeURIComponent(model)}/${action}`, { method: "POST" });
  if (answer.ok) {
    const body = await answer.json();
    notice(`${model}: ${body.result || body.state || `${action} done`}`, "ok");
  } else if (answer.status === 401) {
    notice(`Wrong admin token: nothing was done to ${model}.`, "bad");
  } else {
    notice(`${model}: ${await errorText(answer)}`, "bad");
  }
  refresh();
}

// --- memory: one bar per pool ---------------------------------------------------------------------

function segment(kind, size, total, label) {
  if (!total || size <= 0) return null;
  const part = el("span", { class: kind, title: label, "aria-label": label });
  part.style.width = `${(100 * size / total).toFixed(3)}%`;  // CSSOM: the page's policy refuses inline style attributes
  return part;
}

function renderPools() {
  if (!status) return;
  const pools = status.scheduler?.pools || {};
  const scheduled = status.scheduler?.models || {};
  const blocks = [];
  // /gpu lists other nodes' GPUs too (their agents' memory only): those are drawn from the pools below.
  const here = (status.gpu.gpus || []).filter((gpu) => (gpu.node || "local") === "local");
  for (const gpu of here) {
    const total = gpu.memory.total_bytes || 0;
    const pool = pools[`gpu${gpu.index}`];
    const used = gpu.models || {};
    const parts = [];
    const captions = [];
    let ours = 0;
    for (const [name, s] of Object.entries(scheduled)) {
      const estimate = s.need_bytes?.[`gpu${gpu.index}`] || 0;
      const seen = used[name] || 0;
      if (!estimate && !seen) continue;
      ours += Math.max(estimate, seen);
      captions.push(`${name}: used ${bytes(seen)}, estimate ${bytes(estimate)}`);
      parts.push(segment("ours", seen, total, `${name}: used ${bytes(seen)}, estimate ${bytes(estimate)}`));
      parts.push(segment("est", estimate - seen, total, `${name}: estimated, not yet used ${bytes(estimate - seen)}`));
    }
    const others = pool ? pool.others_bytes : Math.max(0, (gpu.memory.used_bytes || 0) - sum(used));
    const reserve = pool ? Math.max(0, total - pool.capacity_bytes) : 0;
    const free = Math.max(0, total - ours - others - reserve);
    parts.push(segment("others", others, total, `other processes ${bytes(others)}`));
    parts.push(segment("free", free, total, `free ${bytes(free)}`));
    parts.push(segment("reserve", reserve, total, `reserve ${bytes(reserve)}`));
    const facts = [`${bytes(gpu.memory.used_bytes)} used of ${bytes(total)}`, `free ${bytes(free)}`, `reserve ${bytes(reserve)}`,
      gpu.utilization.gpu_percent !== null ? `util ${gpu.utilization.gpu_percent}%` : "util –",
      gpu.temperature_c !== null ? `${gpu.temperature_c} °C` : "temp –",
      gpu.power_w !== null ? `${gpu.power_w.toFixed(0)} W${gpu.power_limit_w ? ` of ${gpu.power_limit_w.toFixed(0)}` : ""}` : "power –"];
    blocks.push(el("div", { class: "pool" }, el("h2", {}, `GPU ${gpu.index}: ${gpu.name || "unknown"}`),
      el("div", { class: "bar", role: "img", "aria-label": facts.join(", ") }, ...parts), el("div", { class: "facts" }, facts.join(" · ")),
      captions.length ? el("div", { class: "facts models" }, captions.join(" · ")) : null));
  }
  for (const [key, pool] of Object.entries(pools)) {
    // This box's GPUs are drawn above from NVML; another node's pools (`node/gpu0`, `node/budget`)
    // are drawn as the scheduler sees them, one bar each, named by node.
    if (/^gpu\d+$/.test(key) && here.length) continue;
    const total = pool.capacity_bytes;
    const parts = Object.entries(scheduled).map(([name, s]) =>
      segment("ours", s.need_bytes?.[key] || 0, total, `${name}: ${bytes(s.need_bytes?.[key] || 0)}`));
    parts.push(segment("others", pool.others_bytes, total, `others ${bytes(pool.others_bytes)}`));
    parts.push(segment("free", pool.free_bytes, total, `free ${bytes(pool.free_bytes)}`));
    const facts = `${bytes(pool.models_bytes)} for our models of a ${bytes(total)} budget · free ${bytes(pool.free_bytes)}`;
    const [node, what] = key.includes("/") ? key.split("/", 2) : [null, key];
    const title = `${/^gpu\d+$/.test(what) ? `GPU ${what.slice(3)}` : "Memory budget"}${node ? ` on node ${node}` : ""}`;
    blocks.push(el("div", { class: "pool" }, el("h2", {}, title),
      el("div", { class: "bar", role: "img", "aria-label": facts }, ...parts), el("div", { class: "facts" }, facts)));
  }
  if (!blocks.length) {
    blocks.push(el("p", { class: "note" }, `No GPU (${status.gpu.reason || "none seen"}) and no scheduler memory pool `
      + "(no orchestrator): nothing to draw."));
  }
  $("pools").replaceChildren(...blocks);
}

// --- activity -------------------------------------------------------------------------------------

async function readActivity() {
  const model = $("activity-model").value;
  const query = new URLSearchParams({ limit: "200", ...(model ? { model } : {}) });
  const answer = await adminFetch(`admin/activity?${query}`);
  if (!answer.ok) { $("activity-note").textContent = await errorText(answer); return; }
  const list = await answer.json();
  $("activity-note").textContent = `${list.records.length} shown; the gateway keeps ${list.kept}`;
  renderSpeed(list.records);
  $("activity").replaceChildren(...list.records.map((r) => el("tr", {},
    el("td", { class: "num" }, new Date(r.at).toLocaleTimeString()), el("td", {}, r.model), el("td", {}, r.endpoint),
    el("td", { class: r.status >= 400 ? "bad" : "" }, r.status, r.error ? ` ${r.error}` : ""),
    el("td", { class: "num" }, secs(r.queue_wait_s)), el("td", { class: "num" }, secs(r.load_wait_s)),
    el("td", { class: "num" }, secs(r.ttft_s)), el("td", { class: "num" }, `${r.tokens_in ?? "–"} / ${r.tokens_out ?? "–"}`),
    el("td", { class: "num" }, r.tokens_per_s === null ? "–" : r.tokens_per_s.toFixed(1)),
    el("td", { class: "num" }, secs(r.duration_s)))));
}

// One small line chart per model: tokens/s of its latest requests, oldest left (SVG built node by
// node, like everything else).
const SVG = "http://www.w3.org/2000/svg";

function renderSpeed(records) {
  const byModel = new Map();
  for (const r of [...records].reverse()) {
    if (r.tokens_per_s === null || r.tokens_per_s === undefined) continue;
    if (!byModel.has(r.model)) byModel.set(r.model, []);
    byModel.get(r.model).push(r.tokens_per_s);
  }
  const charts = [...byModel].map(([model, speeds]) => {
    const top = Math.max(...speeds) || 1;
    const step = speeds.length > 1 ? 240 / (speeds.length - 1) : 0;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 240 48");
    svg.setAttribute("role", "img");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", speeds.map((v, i) => `${(i * step).toFixed(1)},${(46 - 44 * v / top).toFixed(1)}`).join(" "));
    svg.append(line);
    const sorted = [...speeds].sort((a, b) => a - b);
    const caption = `${model}: last ${speeds.at(-1).toFixed(1)} tok/s, median ${sorted[Math.floor(sorted.length / 2)].toFixed(1)}, `
      + `top ${top.toFixed(1)} (${speeds.length} requests)`;
    svg.setAttribute("aria-label", caption);
    return el("figure", { class: "speed", "data-model": model }, svg, el("figcaption", { class: "sub" }, caption));
  });
  $("speed").replaceChildren(...charts);
}

function renderModelChoices() {
  const names = status.models.map((m) => m.id);
  for (const [id, keepFirst] of [["activity-model", true], ["chat-model", false], ["logs-model", false]]) {
    const select = $(id);
    const have = [...select.options].slice(keepFirst ? 1 : 0).map((o) => o.value);
    if (have.join("\n") === names.join("\n")) continue;
    const chosen = select.value;
    const options = names.map((name) => el("option", { value: name }, name));
    if (keepFirst) options.unshift(el("option", { value: "" }, "all models"));
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }
}

// --- logs: a model's llama-server log followed live, its colours kept -----------------------------

const LOG_NODES = 20000;        // the oldest runs are dropped past this: a long follow stays light
const SGR = /\x1b\[([0-9;]*)m/g; // the colour escapes llama-server writes; the rest is text
let logsAbort = null;
let logStyle = [];
let logPending = "";

function sgr(style, params) {
  let next = [...style];
  for (const code of (params === "" ? [0] : params.split(";").map(Number))) {
    if (code === 0) next = [];
    else if (code === 1) next.push("ansi-bold");
    else if (code === 39) next = next.filter((c) => !c.startsWith("ansi-fg"));
    else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) {
      next = next.filter((c) => !c.startsWith("ansi-fg"));
      next.push(`ansi-fg${code}`);
    }
  }
  return next;
}

// Appends text to the log as text nodes (coloured runs in spans); follows the end unless the
// reader scrolled up, which pauses it until they scroll back down.
function appendLog(chunk) {
  const out = $("logs-out");
  const following = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
  let text = logPending + chunk;
  const cut = text.lastIndexOf("\x1b");
  logPending = cut >= 0 && !/m/.test(text.slice(cut)) ? text.slice(cut) : "";  // an escape split across reads
  if (logPending) text = text.slice(0, cut);
  let last = 0;
  const run = (part) => {
    if (part) out.append(logStyle.length ? el("span", { class: logStyle.join(" ") }, part) : document.createTextNode(part));
  };
  for (const match of text.matchAll(SGR)) {
    run(text.slice(last, match.index));
    logStyle = sgr(logStyle, match[1]);
    last = match.index + match[0].length;
  }
  run(text.slice(last));
  while (out.childNodes.length > LOG_NODES) out.firstChild.remove();
  if (following) out.scrollTop = out.scrollHeight;
  $("logs-state").textContent = following ? "following" : "paused: scroll to the end to follow again";
}

async function followLogs() {
  logsAbort?.abort();
  const model = $("logs-model").value;
  if (!model) return;
  $("logs-out").replaceChildren();
  logStyle = [];
  logPending = "";
  const mine = new AbortController();
  logsAbort = mine;
  $("logs-stop").disabled = false;
  $("logs-state").textContent = "connecting…";
  try {
    const answer = await adminFetch(`admin/models/${encodeURIComponent(model)}/logs?tail=200&follow=true`,
      { signal: mine.signal });
    if (!answer.ok) { $("logs-state").textContent = await errorText(answer); return; }
    $("logs-state").textContent = "following";
    const reader = answer.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      appendLog(decoder.decode(value, { stream: true }));
    }
    $("logs-state").textContent = "the log ended (its server stopped)";
  } catch (error) {
    $("logs-state").textContent = error.name === "AbortError" ? "stopped" : `failed: ${error.message}`;
  } finally {
    if (logsAbort === mine) { logsAbort = null; $("logs-stop").disabled = true; }
  }
}

// --- playground: a streamed chat with a stop button -----------------------------------------------

let chatAbort = null;

async function chat(event) {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  const model = $("chat-model").value;
  if (!text || !model || chatAbort) return;
  const log = $("chat-log");
  log.append(el("div", { class: "msg user" }, text));
  const reply = el("div", { class: "msg assistant" });
  log.append(reply);
  $("chat-input").value = "";
  chatAbort = new AbortController();
  $("chat-stop").disabled = false;
  $("chat-send").disabled = true;
  $("chat-state").textContent = "waiting for the model…";
  const key = $("chat-key").value;
  try {
    const answer = await fetch("../v1/chat/completions", {
      method: "POST", signal: chatAbort.signal,
      headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ model, stream: true, messages: [{ role: "user", content: text }] }),
    });
    if (!answer.ok) throw new Error(await errorText(answer));
    const reader = answer.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");  // "\n" only: the text may hold U+2028 and other line breaks
      buffer = lines.pop();
      for (const line of lines) {
        // While it waits the gateway says why, as SSE comments: ": loading qwen3 12.3 s", ": queued 3rd".
        if (line.startsWith(":")) { $("chat-state").textContent = line.slice(1).trim(); continue; }
        if (!line.startsWith("data: {")) continue;
        const delta = JSON.parse(line.slice(6)).choices?.[0]?.delta?.content;
        if (delta) {
          if (!reply.childNodes.length) $("chat-state").textContent = "streaming…";
          reply.append(document.createTextNode(delta));
        }
      }
    }
    $("chat-state").textContent = "done";
  } catch (error) {
    $("chat-state").textContent = error.name === "AbortError" ? "stopped" : `failed: ${error.message}`;
  } finally {
    chatAbort = null;
    $("chat-stop").disabled = true;
    $("chat-send").disabled = false;
  }
}

// --- views and start ------------------------------------------------------------------------------

function show(name) {
  view = name;
  for (const tab of document.querySelectorAll(".tab")) {
    if (tab.dataset.view === name) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  if (name === "activity" && !admin.token) $("activity-note").textContent = "The activity record needs the admin token.";
  refresh();
}

for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => show(tab.dataset.view));
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  if (token) useToken(token);
});
$("token-forget").addEventListener("click", () => { admin.forget(); listing = null; showTokenState("read-only"); renderModels(); });
$("activity-model").addEventListener("change", () => refresh());
$("chat-form").addEventListener("submit", chat);
$("add-form").addEventListener("submit", add);
$("logs-follow").addEventListener("click", followLogs);
$("logs-stop").addEventListener("click", () => logsAbort?.abort());
$("logs-out").addEventListener("scroll", () => {
  const out = $("logs-out");
  if (logsAbort && out.scrollTop + out.clientHeight >= out.scrollHeight - 4) $("logs-state").textContent = "following";
});
$("chat-stop").addEventListener("click", () => chatAbort?.abort());
if (admin.token) showTokenState("admin", "ok");
refresh();
