// space-cloud cluster dashboard: one page, no build step, no framework.
//
// Everything it shows comes from the API with the session's token (the admin's, or a
// minted one): the live state from the Server-Sent Events of /v1/config/events
// (snapshot, project.put, project.delete, peers), edits through PUT with If-Match, a
// project's versions and rollback (also with If-Match) through /projects/{id}/history
// and /rollback. The token stays in this tab's sessionStorage and goes in an
// Authorization header, except for the event stream: EventSource cannot set headers, so
// that one URL carries ?token= (the API takes it there and nowhere else). The page shows only what the token may do
// (GET /v1/config/tokens/self): a reader sees no editing, only an admin of every project
// sees the Tokens panel, and a token scoped to some projects gets a stream of only those
// (the instance filters it). A stream ends with its token: the page then logs out.
"use strict";

const API = "/v1/config";
const TOKEN_KEY = "space-cloud.session";
const LOG_LIMIT = 300;
const RECONNECT_MAX_MS = 5000;
const EVENT_TYPES = ["snapshot", "project.put", "project.delete", "peers"];
// A token without expiry (sessionStorage keeps numbers, not Infinity).
const NEVER = 253402300799;
// setTimeout fires at once beyond this many milliseconds.
const MAX_TIMER_MS = 2 ** 31 - 1;

const state = {
  token: null,         // the session's token (null in --dev mode)
  expiresAt: 0,        // seconds since the epoch
  principal: null,     // {name, role, projects, expiresAt} of the token (null in --dev mode)
  env: null,           // GET /v1/config/env of the instance serving this page
  projects: new Map(), // id -> {doc, revision (null until known)}
  peers: [],
  newest: 0,           // the newest project change (revision) this page has seen
  lastId: null,        // id of the last snapshot/change event applied: where to resume
  source: null,        // the current EventSource
  paused: false,
  attempts: 0,         // failed reconnects in a row (our own, after the browser gave up)
  reconnectTimer: null,
  resume: null,        // {from, replayed} while a resumed stream replays what was missed
  connected: false,
  editing: null,       // {id, revision, base} | {create: true}
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

// --- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, { body, headers = {} } = {}) {
  const sent = { Accept: "application/json", ...headers };
  if (state.token) sent.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers: sent,
    body: body === undefined ? undefined : body,
    cache: "no-store",
  });
  if (response.status === 401 && path !== "/login") {
    logout("The session has expired or was refused: log in again.");
    throw new ApiError(401, "not logged in");
  }
  return response;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function revisionOf(response) {
  const match = /(\d+)/.exec(response.headers.get("ETag") || "");
  return match ? Number(match[1]) : null;
}

const projectPath = (id) => `/projects/${encodeURIComponent(id)}`;

// --- session ---------------------------------------------------------------------------

async function boot() {
  bindUi();
  try {
    state.env = await (await fetch(`${API}/env`, { cache: "no-store" })).json();
    renderEnv();
  } catch (_) {
    notice("This instance does not answer /v1/config/env.", true);
  }
  const saved = readSession();
  if (state.env && state.env.dev) startDashboard(null, 0, null);
  else if (saved) startDashboard(saved.token, saved.expiresAt, saved.principal);
  else showLogin();
}

function readSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null");
    if (saved && saved.token && saved.principal && saved.expiresAt * 1000 > Date.now() + 5000) return saved;
  } catch (_) { /* ignore a corrupt entry */ }
  sessionStorage.removeItem(TOKEN_KEY);
  return null;
}

function showLogin(message) {
  $("#dashboard").hidden = true;
  $("#session").hidden = true;
  $("#login-view").hidden = false;
  $("#login-error").hidden = !message;
  $("#login-error").textContent = message || "";
  $("#login-pass").value = "";
  (($("#login-user").value && $("#login-pass")) || $("#login-user")).focus();
}

async function login(event) {
  event.preventDefault();
  const button = $("#login button[type=submit]");
  button.disabled = true;
  $("#login-error").hidden = true;
  try {
    const response = await api("POST", "/login", {
      body: JSON.stringify({ user: $("#login-user").value, pass: $("#login-pass").value }),
    });
    if (!response.ok) throw new ApiError(response.status, await errorOf(response));
    const { token } = await response.json();
    $("#login-pass").value = "";
    await openSession(token);
  } catch (error) {
    $("#login-error").textContent = error instanceof ApiError ? error.message : "The instance did not answer.";
    $("#login-error").hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function tokenLogin(event) {
  event.preventDefault();
  const button = $("#token-login button[type=submit]");
  button.disabled = true;
  $("#token-error").hidden = true;
  try {
    await openSession($("#token-input").value.trim());
    $("#token-input").value = "";
  } catch (error) {
    $("#token-error").textContent = error instanceof ApiError ? error.message : "The instance did not answer.";
    $("#token-error").hidden = false;
  } finally {
    button.disabled = false;
  }
}

// Ask the instance what the token may do, keep it for this tab, and open the dashboard.
async function openSession(token) {
  const response = await fetch(`${API}/tokens/self`, {
    headers: { Accept: "application/json", Authorization: `Bearer ${token}` },
    cache: "no-store",
  });
  if (!response.ok) throw new ApiError(response.status, await errorOf(response));
  const principal = await response.json();
  const expiresAt = principal.expiresAt ?? NEVER;
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token, expiresAt, principal }));
  startDashboard(token, expiresAt, principal);
}

// What the session's token may do; --dev (no principal) may do everything.
const mayWrite = () => !state.principal || state.principal.role !== "reader";
const mayAdmin = () => !state.principal ||
  (state.principal.role === "admin" && state.principal.projects.includes("*"));

let expiryTimer = null;

function startDashboard(token, expiresAt, principal) {
  state.token = token;
  state.expiresAt = expiresAt;
  state.principal = principal;
  $("#login-view").hidden = true;
  $("#dashboard").hidden = false;
  $("#session").hidden = false;
  $("#logout").hidden = !token;
  clearTimeout(expiryTimer);
  if (token) {
    const left = expiresAt * 1000 - Date.now();
    if (left < MAX_TIMER_MS) {
      expiryTimer = setTimeout(() => logout("The session has expired: log in again."), Math.max(0, left));
    }
  }
  resetView();
  renderWho();
  $("#new-project").hidden = !mayWrite();
  $("#tokens-card").hidden = !mayAdmin();
  if (mayAdmin()) loadTokens();
  connect();
}

function renderWho() {
  const principal = state.principal;
  if (!principal) { $("#who").replaceChildren(); return; }
  $("#who").replaceChildren(el("b", { text: principal.name }), ` · ${principal.role} of `,
    el("b", { text: principal.projects.join(", ") }));
}

function logout(message) {
  clearTimeout(expiryTimer);
  hideMinted();
  closeStream();
  clearTimeout(state.reconnectTimer);
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.principal = null;
  setConnection("idle", "not connected");
  showLogin(message);
}

function resetView() {
  state.projects = new Map();
  state.peers = [];
  state.newest = 0;
  state.lastId = null;
  state.paused = false;
  state.attempts = 0;
  state.resume = null;
  closeEditor();
  $("#log").replaceChildren();
  renderAll();
}

// --- the event stream ------------------------------------------------------------------
//
// The browser's EventSource reconnects by itself after a dropped stream and sends
// Last-Event-ID. It gives up (readyState CLOSED) when an answer is not a stream, e.g. a
// 503 from an instance that is still starting; then this page opens a new EventSource
// with ?lastEventId= (a new EventSource sends no Last-Event-ID header). Either way the
// instance replays every change after that id (the stream then starts with a retry-only
// frame, the replayed changes, then a `peers` event) or, when the id is older than its
// history, sends a fresh snapshot.

function connect() {
  closeStream();
  clearTimeout(state.reconnectTimer);
  const params = new URLSearchParams();
  if (state.token) params.set("token", state.token);
  if (state.lastId !== null) params.set("lastEventId", String(state.lastId));
  const source = new EventSource(`${API}/events?${params}`);
  state.source = source;
  if ($("#conn").dataset.state !== "reconnecting") setConnection("connecting", "connecting…");
  source.onopen = () => {
    if (source !== state.source) return;
    state.attempts = 0;
    if (state.lastId === null) {
      setConnection("connecting", "loading the snapshot…");
    } else {
      state.resume = { from: state.lastId, replayed: 0 };
      setConnection("resuming", `resuming from id ${state.lastId}…`);
    }
  };
  source.onerror = () => {
    if (source !== state.source) return;
    const wasConnected = state.connected;
    state.connected = false;
    state.resume = null;
    if (source.readyState === EventSource.CONNECTING) {
      // The browser retries by itself (after the `retry:` the instance asked for).
      setConnection("reconnecting", reconnectingText());
      if (wasConnected) logLine("ev-conn", "stream lost", null, "the browser reconnects by itself");
    } else {
      source.close();
      if (wasConnected) logLine("ev-conn", "stream lost", null, "the instance refused the stream");
      scheduleReconnect();
    }
  };
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (event) => {
      if (source !== state.source) return;
      try {
        onEvent(type, event);
      } catch (error) {
        logLine("ev-conn", "bad event", null, `${type}: ${error.message}`);
      }
    });
  }
}

function closeStream() {
  if (state.source) state.source.close();
  state.source = null;
  state.connected = false;
  state.resume = null;
}

function reconnectingText() {
  return state.lastId === null ? "reconnecting…" : `reconnecting… (will resume from id ${state.lastId})`;
}

// The browser gave up on the stream (an answer that was not a stream): ask the instance
// why with an ordinary request (a 401 logs out; a 503 names the cause), then try again.
async function scheduleReconnect() {
  const delay = Math.min(RECONNECT_MAX_MS, 500 * 2 ** state.attempts) * (0.6 + 0.4 * Math.random());
  state.attempts += 1;
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(connect, delay);
  setConnection("reconnecting", reconnectingText());
  let reason = "the instance does not answer";
  try {
    const response = await api("GET", "/peers");
    reason = response.ok ? "the stream was refused" : await errorOf(response);
  } catch (error) {
    if (error instanceof ApiError) return; // logged out
  }
  if (state.source === null || state.source.readyState !== EventSource.CLOSED) return;
  setConnection("reconnecting", `${reconnectingText()}: ${reason}`);
  logLine("ev-conn", "refused", null, `${reason}; next try in ${(delay / 1000).toFixed(1)} s`);
}

function togglePause() {
  if (state.paused) {
    state.paused = false;
    $("#pause").textContent = "Pause";
    logLine("ev-conn good", "resume", state.lastId, "stream reopened by the operator");
    connect();
  } else {
    state.paused = true;
    clearTimeout(state.reconnectTimer);
    closeStream();
    $("#pause").textContent = "Resume";
    setConnection("paused", state.lastId === null ? "paused" : `paused at id ${state.lastId}`);
    logLine("ev-conn", "pause", state.lastId, "live updates paused");
  }
}

function onEvent(type, event) {
  const data = JSON.parse(event.data);
  const id = type === "peers" ? null : Number(event.lastEventId);
  if (type === "snapshot") onSnapshot(data, id);
  else if (type === "project.put") onPut(data);
  else if (type === "project.delete") onDelete(data);
  else onPeers(data.peers);
  if (id !== null && !Number.isNaN(id)) state.lastId = id;

  const resume = state.resume;
  if (resume && type === "snapshot") {
    state.resume = null;
    setConnection("connected", `connected · id ${resume.from} too old to resume: fresh snapshot at ${id}`);
    logLine("ev-conn good", "resynced", id, `could not resume from id ${resume.from}: fresh snapshot`);
  } else if (resume && type !== "peers") {
    resume.replayed += 1;
  } else if (resume) {
    state.resume = null;
    const replayed = resume.replayed === 1 ? "1 change replayed" : `${resume.replayed} changes replayed`;
    setConnection("connected", `connected · resumed from id ${resume.from} (${replayed})`);
    logLine("ev-conn good", "resumed", resume.from, `from id ${resume.from}: ${replayed}`);
  } else if (type === "snapshot") {
    setConnection("connected", "connected");
  }
  state.connected = true;
}

function onSnapshot(data, id) {
  const before = state.projects;
  const next = new Map();
  const known = data.revisions; // each project's own revision (its ETag)
  let added = 0, changed = 0;
  for (const doc of data.projects) {
    const old = before.get(doc.id);
    if (!old) added += 1;
    else if (canonical(old.doc) !== canonical(doc)) changed += 1;
    next.set(doc.id, { doc, revision: known[doc.id] });
    state.newest = Math.max(state.newest, known[doc.id]);
  }
  const removed = [...before.keys()].filter((key) => !next.has(key)).length;
  state.projects = next;
  const first = before.size === 0 && state.lastId === null;
  const summary = first
    ? `${next.size} projects, ${data.peers.length} instances`
    : `${next.size} projects (${added} new, ${changed} changed, ${removed} gone while away)`;
  logLine("ev-snapshot", "snapshot", id, summary);
  onPeers(data.peers, true);
  renderProjects();
  noteEditedProjectAfterSnapshot();
}

function onPut({ revision, project }) {
  const known = state.projects.get(project.id);
  if (known && known.revision !== null && known.revision >= revision) return; // seen
  state.projects.set(project.id, { doc: project, revision });
  state.newest = Math.max(state.newest, revision);
  logLine("ev-put", "project.put", revision, `${project.id}${known ? "" : " (new)"} · ${project.name || ""}`);
  renderProjects(project.id);
  noteEditedProjectChanged(project.id, revision, false);
}

function onDelete({ revision, id }) {
  state.newest = Math.max(state.newest, revision);
  if (!state.projects.delete(id)) return;
  logLine("ev-delete", "project.delete", revision, id);
  renderProjects();
  noteEditedProjectChanged(id, revision, true);
}

function onPeers(peers, quiet = false) {
  const before = new Set(state.peers.map((peer) => peer.id));
  const after = new Set(peers.map((peer) => peer.id));
  if (!quiet && before.size) {
    const joined = [...after].filter((id) => !before.has(id));
    const left = [...before].filter((id) => !after.has(id));
    if (joined.length) logLine("ev-peers", "joined", null, joined.join(", "));
    if (left.length) logLine("ev-peers", "left", null, left.join(", "));
    if (!joined.length && !left.length) {
      logLine("ev-peers", "peers", null,
        peers.map((peer) => `${peer.id} at ${peer.appliedRevision}`).join(" · "));
    }
  }
  state.peers = peers;
  renderPeers();
}

// --- rendering -------------------------------------------------------------------------

function setConnection(kind, text) {
  const conn = $("#conn");
  conn.dataset.state = kind;
  conn.title = text;
  $("#conn-text").textContent = text;
}

function renderEnv() {
  const env = state.env;
  const parts = [
    ["cluster", env.clusterId], ["store", env.storeType], ["served by", env.nodeId],
    ["v", env.version],
  ];
  $("#env").replaceChildren(...parts.flatMap(([label, value], index) => [
    index ? " · " : "", label === "v" ? label : `${label} `, el("b", { text: value }),
  ]));
  if (env.dev) $("#env").append(" · ", el("b", { class: "error", text: "DEV MODE: no auth" }));
}

function renderAll() {
  renderPeers();
  renderProjects();
}

function renderPeers() {
  const rows = state.peers.map((peer) => {
    const behind = state.newest - peer.appliedRevision;
    const lagging = behind > 0;
    return el("tr", { "data-id": peer.id, class: lagging ? "lagging" : "" },
      el("td", { class: "id" }, peer.id,
        peer.self ? el("span", { class: "badge self", text: "this page", title: "serves this page" }) : ""),
      el("td", { class: "mono", text: peer.addr }),
      el("td", { text: peer.version }),
      el("td", { class: "uptime", "data-started": peer.startedAt, text: uptime(peer.startedAt) }),
      el("td", { class: "num applied", text: String(peer.appliedRevision) }),
      el("td", {},
        lagging
          ? el("span", { class: "badge lag", text: `behind by ${behind}`, title: `the newest change is ${state.newest}` })
          : el("span", { class: "badge ok", text: "up to date" })));
  });
  $("#peers tbody").replaceChildren(...rows);
  $("#newest").textContent = state.newest ? `newest change: revision ${state.newest}` : "no changes seen yet";
}

function renderProjects(flashId) {
  const ids = [...state.projects.keys()].sort();
  const rows = ids.map((id) => {
    const { doc, revision } = state.projects.get(id);
    const modules = Object.keys(doc.modules || {});
    const selected = state.editing && state.editing.id === id;
    return el("tr", { "data-id": id, class: [selected ? "selected" : "", id === flashId ? "flash" : ""].join(" ").trim() },
      el("td", { class: "id", text: id }),
      el("td", { class: "name", text: doc.name || "" }),
      el("td", { class: "muted", text: modules.length ? modules.join(", ") : "–" }),
      el("td", { class: "num rev", text: revision === null ? "…" : String(revision) }),
      el("td", { class: "row-actions" },
        el("button", { class: "small edit", type: "button", text: mayWrite() ? "Edit" : "View", onclick: () => openEditor(id) }),
        mayWrite() ? " " : "",
        mayWrite() ? el("button", { class: "small ghost delete", type: "button", text: "Delete", onclick: (e) => deleteProject(id, e.currentTarget) }) : ""));
  });
  $("#projects tbody").replaceChildren(...rows);
  $("#projects-empty").hidden = ids.length > 0;
  $("#project-count").textContent = String(ids.length);
  renderPeers(); // the newest revision may have moved
}

function uptime(startedAt) {
  const started = Date.parse(startedAt);
  if (Number.isNaN(started)) return "?";
  let seconds = Math.max(0, Math.floor((Date.now() - started) / 1000));
  const days = Math.floor(seconds / 86400); seconds %= 86400;
  const hours = Math.floor(seconds / 3600); seconds %= 3600;
  const minutes = Math.floor(seconds / 60); seconds %= 60;
  if (days) return `${days}d ${hours}h`;
  if (hours) return `${hours}h ${minutes}m`;
  if (minutes) return `${minutes}m ${seconds}s`;
  return `${seconds}s`;
}

function tickUptimes() {
  for (const cell of document.querySelectorAll("#peers td.uptime")) {
    cell.textContent = uptime(cell.dataset.started);
  }
}

function logLine(kind, label, revision, text) {
  const time = new Date().toLocaleTimeString([], { hour12: false }) + "." +
    String(new Date().getMilliseconds()).padStart(3, "0");
  const item = el("li", { class: kind },
    el("span", { class: "when", text: time }),
    el("span", { class: "kind", text: label }),
    el("span", { class: "rev", text: revision === null || revision === undefined ? "" : `#${revision}` }),
    el("span", { class: "text", text, title: text }));
  const log = $("#log");
  log.prepend(item);
  while (log.children.length > LOG_LIMIT) log.lastElementChild.remove();
}

let noticeTimer = null;

function notice(text, bad = false) {
  const box = $("#notice");
  box.textContent = text;
  box.classList.toggle("bad", bad);
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

// --- the editor ------------------------------------------------------------------------

function editorMessage(text, kind = "") {
  const msg = $("#editor-msg");
  msg.textContent = text;
  msg.className = `msg ${kind}`;
}

function showEditor(title, base, doc) {
  $("#editor-hint").hidden = true;
  $("#editor-body").hidden = false;
  $("#editor-title").textContent = title;
  $("#editor-base").textContent = base;
  $("#doc").value = JSON.stringify(doc, null, 2);
  $("#doc").readOnly = !mayWrite();
  $("#save").hidden = !mayWrite();
  $("#format").hidden = !mayWrite();
  $("#stale").hidden = true;
  $("#conflict").hidden = true;
  $("#versions").hidden = true;
  editorMessage("");
  renderProjects();
}

async function openEditor(id) {
  try {
    const response = await api("GET", projectPath(id));
    if (!response.ok) {
      notice(`Could not open ${id}: ${await errorOf(response)}`, true);
      return;
    }
    const doc = await response.json();
    const revision = revisionOf(response);
    const listed = state.projects.get(id);
    if (listed && listed.revision === null) listed.revision = revision; // the list has none
    state.editing = { id, revision, base: doc };
    showEditor(`${mayWrite() ? "Edit" : "View"} ${id}`, `at revision ${revision}`, doc);
    $("#editor-base").dataset.revision = String(revision);
    await loadVersions(id);
  } catch (error) {
    if (!(error instanceof ApiError)) notice(`Could not open ${id}: the instance did not answer.`, true);
  }
}

function newProject() {
  state.editing = { create: true };
  showEditor("New project", "created with POST (409 if the id exists)",
    { id: "", name: "", secret: "", modules: {} });
  $("#editor-base").dataset.revision = "";
  $("#doc").focus();
}

function closeEditor() {
  state.editing = null;
  $("#editor-hint").hidden = false;
  $("#editor-body").hidden = true;
  $("#editor-title").textContent = "Editor";
  $("#editor-base").textContent = "";
  renderProjects();
}

function parseEditor() {
  try {
    const doc = JSON.parse($("#doc").value);
    if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new Error("a project is a JSON object");
    return doc;
  } catch (error) {
    editorMessage(`Not valid JSON: ${error.message}`, "bad");
    return null;
  }
}

async function save() {
  const editing = state.editing;
  const doc = parseEditor();
  if (!editing || !doc) return;
  $("#save").disabled = true;
  editorMessage("Saving…");
  try {
    if (editing.create) {
      const response = await api("POST", "/projects", { body: JSON.stringify(doc) });
      if (!response.ok) { editorMessage(await errorOf(response), "bad"); return; }
      const { project, revision } = await response.json();
      await openEditor(project);
      editorMessage(`Created ${project} at revision ${revision}.`, "ok");
      return;
    }
    await put(editing, doc, condition(editing.revision));
  } catch (error) {
    if (!(error instanceof ApiError)) editorMessage("The instance did not answer: nothing was saved.", "bad");
  } finally {
    $("#save").disabled = false;
  }
}

// Replace only the revision that was edited; create only if it is gone (null).
function condition(revision) {
  return revision === null ? { "If-None-Match": "*" } : { "If-Match": `"${revision}"` };
}

async function put(editing, doc, headers) {
  const response = await api("PUT", projectPath(editing.id), { body: JSON.stringify(doc), headers });
  if (response.status === 412) {
    await showConflict(editing, doc);
    return;
  }
  if (!response.ok) { editorMessage(await errorOf(response), "bad"); return; }
  const { revision } = await response.json();
  editing.revision = revision;
  await openEditor(editing.id);
  editorMessage(`Saved as revision ${revision}.`, "ok");
}

// A 412: someone else changed (or deleted) the project since it was opened. Fetch the
// current version and show it beside ours instead of overwriting it.
async function showConflict(editing, mine) {
  const response = await api("GET", projectPath(editing.id));
  const current = response.ok ? await response.json() : null;
  const revision = response.ok ? revisionOf(response) : null;
  editing.conflict = { mine, current, revision };
  $("#conflict").hidden = false;
  $("#conflict-actions").hidden = false;
  $("#conflict-title").textContent = "Not saved: the project changed meanwhile";
  $("#stale").hidden = true;
  $("#conflict-mine").textContent = canonical(mine);
  if (current) {
    $("#conflict-text").textContent =
      `You edited revision ${editing.revision}; the cluster is now at revision ${revision}. Nothing was overwritten.`;
    $("#conflict-diff-title").textContent = `What changed meanwhile (revision ${editing.revision} → ${revision})`;
    renderDiff($("#conflict-diff"), canonical(editing.base), canonical(current));
    $("#conflict-theirs-title").textContent = `Current (revision ${revision})`;
    $("#conflict-theirs").textContent = canonical(current);
    $("#conflict-take").textContent = `Take revision ${revision} (discard mine)`;
    $("#conflict-overwrite").textContent = `Save mine over revision ${revision}`;
  } else {
    $("#conflict-text").textContent = `${editing.id} was deleted after revision ${editing.revision}. Nothing was written.`;
    $("#conflict-diff-title").textContent = "What changed meanwhile";
    $("#conflict-diff").textContent = "(the project was deleted)";
    $("#conflict-theirs-title").textContent = "Current";
    $("#conflict-theirs").textContent = "(deleted)";
    $("#conflict-take").textContent = "Close (discard mine)";
    $("#conflict-overwrite").textContent = "Re-create it with mine";
  }
  editorMessage("Not saved: see below.", "bad");
  logLine("ev-conn", "412", editing.revision, `${editing.id}: changed meanwhile, not overwritten`);
}

async function conflictOverwrite() {
  const editing = state.editing;
  if (!editing || !editing.conflict) return;
  const { mine, revision } = editing.conflict;
  $("#conflict").hidden = true;
  try { await put(editing, mine, condition(revision)); } catch (_) { /* reported by api() */ }
}

// Merge by hand: the text stays, the next save is based on the current revision, and the
// diff stays in view.
function conflictKeepEditing() {
  const editing = state.editing;
  if (!editing || !editing.conflict) return;
  const { current, revision } = editing.conflict;
  editing.base = current || editing.base;
  editing.revision = revision;
  $("#conflict-actions").hidden = true;
  $("#conflict-title").textContent = "Merging by hand";
  $("#editor-base").textContent = revision === null ? "(deleted: saving re-creates it)" : `at revision ${revision}`;
  editorMessage(revision === null
    ? "Saving now re-creates the project."
    : `Your text is now based on revision ${revision}: merge the changes shown below, then save.`);
  $("#doc").focus();
}

function conflictTake() {
  const editing = state.editing;
  if (!editing || !editing.conflict) return;
  if (editing.conflict.current) openEditor(editing.id);
  else closeEditor();
}

function noteEditedProjectChanged(id, revision, deleted) {
  const editing = state.editing;
  if (!editing || editing.create || editing.id !== id || revision <= (editing.revision ?? 0)) return;
  $("#stale-text").textContent = deleted
    ? `${id} was deleted on the cluster (revision ${revision}) after you opened it.`
    : `${id} changed on the cluster (now revision ${revision}) after you opened revision ${editing.revision}. Saving will be refused.`;
  $("#stale").hidden = !$("#conflict").hidden;
}

function noteEditedProjectAfterSnapshot() {
  const editing = state.editing;
  if (!editing || editing.create) return;
  const project = state.projects.get(editing.id);
  if (!project) noteEditedProjectChanged(editing.id, Number.MAX_SAFE_INTEGER, true);
  else if (canonical(project.doc) !== canonical(editing.base)) {
    $("#stale-text").textContent = `${editing.id} changed on the cluster while this page was away.`;
    $("#stale").hidden = !$("#conflict").hidden;
  }
}

async function deleteProject(id, button) {
  if (!button.classList.contains("confirm")) {
    button.classList.add("confirm");
    button.textContent = "Confirm";
    setTimeout(() => { button.classList.remove("confirm"); button.textContent = "Delete"; }, 4000);
    return;
  }
  const project = state.projects.get(id);
  const headers = project && project.revision !== null ? { "If-Match": `"${project.revision}"` } : {};
  try {
    const response = await api("DELETE", projectPath(id), { headers });
    if (response.status === 412) notice(`${id} changed meanwhile: not deleted. Check it and try again.`, true);
    else if (!response.ok) notice(`Could not delete ${id}: ${await errorOf(response)}`, true);
    else {
      notice(`Deleted ${id} (revision ${response.headers.get("X-Revision")}).`);
      if (state.editing && state.editing.id === id) closeEditor();
    }
  } catch (error) {
    if (!(error instanceof ApiError)) notice(`Could not delete ${id}: the instance did not answer.`, true);
  }
}

// --- tokens (admins of every project) ----------------------------------------------------
//
// A minted token is shown once, in #minted, until "Done" or the next action: it goes to no
// storage, log line or console.

async function loadTokens() {
  try {
    const response = await api("GET", "/tokens");
    if (!response.ok) { notice(`Could not list the tokens: ${await errorOf(response)}`, true); return; }
    renderTokens((await response.json()).tokens);
  } catch (error) {
    if (!(error instanceof ApiError)) notice("Could not list the tokens: the instance did not answer.", true);
  }
}

function renderTokens(tokens) {
  const rows = tokens.map((token) => el("tr", { "data-id": token.id },
    el("td", { class: "id", text: token.name, title: `id ${token.id}` }),
    el("td", { class: "role", text: token.role }),
    el("td", { class: "projects", text: token.projects.join(", ") }),
    el("td", { class: "muted", text: token.expiresAt === null ? "never" : new Date(token.expiresAt * 1000).toLocaleString() }),
    el("td", { class: "row-actions" },
      el("button", { class: "small ghost revoke", type: "button", text: "Revoke", onclick: (e) => revokeToken(token, e.currentTarget) }))));
  $("#tokens tbody").replaceChildren(...rows);
  $("#tokens-empty").hidden = tokens.length > 0;
  $("#token-count").textContent = String(tokens.length);
}

async function mintToken(event) {
  event.preventDefault();
  hideMinted();
  $("#mint-error").hidden = true;
  const ttl = $("#mint-ttl").value.trim();
  const body = {
    name: $("#mint-name").value.trim(),
    role: $("#mint-role").value,
    projects: $("#mint-projects").value.split(",").map((text) => text.trim()).filter(Boolean),
  };
  if (ttl) body.ttlSeconds = Number(ttl);
  const button = $("#mint button[type=submit]");
  button.disabled = true;
  try {
    const response = await api("POST", "/tokens", { body: JSON.stringify(body) });
    if (!response.ok) {
      $("#mint-error").textContent = await errorOf(response);
      $("#mint-error").hidden = false;
      return;
    }
    const minted = await response.json();
    $("#minted-name").textContent = minted.name;
    $("#minted-token").textContent = minted.token;
    $("#copy-msg").textContent = "";
    $("#minted").hidden = false;
    $("#mint").reset();
    logLine("ev-put", "token", null, `minted ${minted.name} (${minted.role} of ${minted.projects.join(", ")})`);
    await loadTokens();
  } catch (error) {
    if (!(error instanceof ApiError)) {
      $("#mint-error").textContent = "The instance did not answer: no token was made.";
      $("#mint-error").hidden = false;
    }
  } finally {
    button.disabled = false;
  }
}

async function copyToken() {
  const text = $("#minted-token").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("#copy-msg").textContent = "Copied.";
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents($("#minted-token"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("#copy-msg").textContent = "Selected: copy it with Ctrl+C.";
  }
}

function hideMinted() {
  $("#minted").hidden = true;
  $("#minted-token").textContent = "";
  $("#minted-name").textContent = "";
}

async function revokeToken(token, button) {
  if (!button.classList.contains("confirm")) {
    button.classList.add("confirm");
    button.textContent = "Confirm";
    setTimeout(() => { button.classList.remove("confirm"); button.textContent = "Revoke"; }, 4000);
    return;
  }
  try {
    const response = await api("DELETE", `/tokens/${encodeURIComponent(token.id)}`);
    if (!response.ok && response.status !== 404) {
      notice(`Could not revoke ${token.name}: ${await errorOf(response)}`, true);
      return;
    }
    notice(`Revoked ${token.name}: every instance refuses it now.`);
    logLine("ev-delete", "token", null, `revoked ${token.name}`);
    await loadTokens();
  } catch (error) {
    if (!(error instanceof ApiError)) notice(`Could not revoke ${token.name}: the instance did not answer.`, true);
  }
}

// --- versions ----------------------------------------------------------------------------

async function loadVersions(id) {
  const response = await api("GET", `${projectPath(id)}/history`);
  if (!response.ok || !state.editing || state.editing.id !== id) return;
  const { versions } = await response.json();
  $("#version-list tbody").replaceChildren(...versions.map((version) => el("tr",
    { "data-revision": String(version.revision), class: version.op, onclick: () => showVersion(id, version) },
    el("td", { class: "num", text: String(version.revision) }),
    el("td", { text: version.op }),
    el("td", { text: version.by || "(unknown)" }),
    el("td", { text: new Date(version.at).toLocaleString() }),
    el("td", { text: version.node }))));
  $("#version-view").hidden = true;
  $("#versions").hidden = false;
}

// The diff from a version to the document being edited's base (the current one).
async function showVersion(id, version) {
  const editing = state.editing;
  if (!editing || editing.id !== id) return;
  $("#version-view").hidden = false;
  $("#version-diff-title").textContent = `Revision ${version.revision} → current (revision ${editing.revision})`;
  if (version.op === "delete") {
    editing.version = null;
    $("#version-diff").textContent = "(this version deleted the project: nothing to roll back to)";
    $("#rollback").hidden = true;
    return;
  }
  const response = await api("GET", `${projectPath(id)}/history/${version.revision}`);
  if (!response.ok) { notice(`Could not read revision ${version.revision}: ${await errorOf(response)}`, true); return; }
  const doc = await response.json();
  editing.version = { revision: version.revision, doc };
  renderDiff($("#version-diff"), canonical(doc), canonical(editing.base));
  $("#rollback").textContent = `Roll back to revision ${version.revision}`;
  $("#rollback").hidden = !mayWrite();
}

// Only from the revision on screen (If-Match): a 412 shows the same view as a save's.
async function rollback() {
  const editing = state.editing;
  if (!editing || !editing.version) return;
  const { revision: target, doc } = editing.version;
  try {
    const response = await api("POST", `${projectPath(editing.id)}/rollback`,
      { body: JSON.stringify({ revision: target }), headers: { "If-Match": `"${editing.revision}"` } });
    if (response.status === 412) { await showConflict(editing, doc); return; }
    if (!response.ok) { editorMessage(await errorOf(response), "bad"); return; }
    const { revision } = await response.json();
    await openEditor(editing.id);
    editorMessage(`Rolled back to revision ${target}: now revision ${revision}.`, "ok");
  } catch (error) {
    if (!(error instanceof ApiError)) editorMessage("The instance did not answer: nothing was rolled back.", "bad");
  }
}

// --- JSON helpers and a small line diff ------------------------------------------------

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sortKeys(value[key])]));
  }
  return value;
}

function canonical(value) {
  return JSON.stringify(sortKeys(value), null, 2);
}

// Longest-common-subsequence diff of two texts by line: [[" " | "-" | "+", line], ...].
function lineDiff(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  if (x.length * y.length > 4e6) return null;
  const table = Array.from({ length: x.length + 1 }, () => new Uint32Array(y.length + 1));
  for (let i = x.length - 1; i >= 0; i--) {
    for (let j = y.length - 1; j >= 0; j--) {
      table[i][j] = x[i] === y[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < x.length && j < y.length) {
    if (x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
    else if (table[i + 1][j] >= table[i][j + 1]) out.push(["-", x[i++]]);
    else out.push(["+", y[j++]]);
  }
  while (i < x.length) out.push(["-", x[i++]]);
  while (j < y.length) out.push(["+", y[j++]]);
  return out;
}

function renderDiff(target, before, after) {
  const diff = lineDiff(before, after);
  if (!diff) { target.textContent = "(too large for a diff: compare both versions below)"; return; }
  if (!diff.some(([op]) => op !== " ")) { target.textContent = "(no difference in content)"; return; }
  const CONTEXT = 2;
  const near = diff.map((_, index) =>
    diff.slice(Math.max(0, index - CONTEXT), index + CONTEXT + 1).some(([op]) => op !== " "));
  const lines = [];
  let skipped = 0;
  diff.forEach(([op, text], index) => {
    if (!near[index]) { skipped++; return; }
    if (skipped) lines.push(el("span", { class: "gap", text: `  ⋯ ${skipped} unchanged lines` }));
    skipped = 0;
    const kind = op === "+" ? "add" : op === "-" ? "del" : "";
    lines.push(el("span", { class: kind, text: `${op} ${text}` }), kind ? "" : "\n");
  });
  if (skipped) lines.push(el("span", { class: "gap", text: `  ⋯ ${skipped} unchanged lines` }));
  target.replaceChildren(...lines);
}

// --- wiring ----------------------------------------------------------------------------

function bindUi() {
  $("#login").addEventListener("submit", login);
  $("#token-login").addEventListener("submit", tokenLogin);
  $("#mint").addEventListener("submit", mintToken);
  $("#refresh-tokens").addEventListener("click", loadTokens);
  $("#copy-token").addEventListener("click", copyToken);
  $("#dismiss-token").addEventListener("click", hideMinted);
  $("#logout").addEventListener("click", () => logout());
  $("#pause").addEventListener("click", togglePause);
  $("#new-project").addEventListener("click", newProject);
  $("#save").addEventListener("click", save);
  $("#reload").addEventListener("click", () => state.editing && !state.editing.create && openEditor(state.editing.id));
  $("#stale-reload").addEventListener("click", () => state.editing && openEditor(state.editing.id));
  $("#close-editor").addEventListener("click", closeEditor);
  $("#format").addEventListener("click", () => {
    const doc = parseEditor();
    if (doc) { $("#doc").value = JSON.stringify(doc, null, 2); editorMessage(""); }
  });
  $("#conflict-take").addEventListener("click", conflictTake);
  $("#conflict-overwrite").addEventListener("click", conflictOverwrite);
  $("#conflict-dismiss").addEventListener("click", conflictKeepEditing);
  $("#rollback").addEventListener("click", rollback);
  $("#clear-log").addEventListener("click", () => $("#log").replaceChildren());
  $("#doc").addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "s") { event.preventDefault(); save(); }
  });
  setInterval(tickUptimes, 1000);
}

document.addEventListener("DOMContentLoaded", boot);
