// The supervisor wallboard: live queue, agents, headline figures, alerts, and actions.
"use strict";

const wall = {
  me: null,
  received: 0,          // ms epoch of the last snapshot (waits tick from it)
  target: 10,           // seconds: beyond this a caller has waited more than two rings
  alerts: [],
  hotline: "",          // the hotline shown ("" every hotline)
  hotlines: [],         // [{id, name: {zh, en}}] from the snapshot
  last: null,           // the last snapshot, re-rendered when the filter changes
};
const $ = (id) => document.getElementById(id);
const MAX_ALERTS = 20;

function say(text, isError) {
  const m = $("message");
  cc.setText(m, text);
  m.className = "message" + (isError ? " error" : "");
}

function level(value, amber, red, higherIsWorse) {
  if (value === null || value === undefined) return "";
  if (higherIsWorse) return value >= red ? "red" : value >= amber ? "amber" : "ok";
  return value <= red ? "red" : value <= amber ? "amber" : "ok";
}

function figure(id, text, cls) {
  const box = $(id);
  cc.setText(box.querySelector(".value"), text);
  box.className = "figure " + (cls || "");
}

function renderFigures(f, queueLen, readyCount) {
  const waiting = f.waiting ?? queueLen;
  const ready = f.agents_ready ?? readyCount;
  figure("fig-two-ring", cc.percent(f.two_ring_share_today), level(f.two_ring_share_today, 0.9, 0.8, false));
  figure("fig-avg-wait", cc.duration(f.avg_wait), level(f.avg_wait, wall.target * 0.7, wall.target, true));
  figure("fig-longest", cc.duration(f.longest_wait), level(f.longest_wait, wall.target * 0.7, wall.target, true));
  figure("fig-abandon", cc.percent(f.abandon_rate), level(f.abandon_rate, 0.05, 0.1, true));
  figure("fig-waiting", String(waiting ?? "–"), waiting > 0 && ready === 0 ? "red" : waiting > 0 ? "amber" : "ok");
  figure("fig-ready", String(ready ?? "–"), ready === 0 && waiting > 0 ? "red" : "ok");
}

function hotlineName(id) {
  const h = wall.hotlines.find((x) => x.id === id);
  return h ? (h.name.en || h.name.zh || h.id) : (id || "–");
}

// Several hotlines: the filter lists them; one hotline (or none known): no filter, no column.
function renderHotlines(hotlines) {
  const list = Array.isArray(hotlines) ? hotlines : [];
  const ids = list.map((h) => h.id).join(",");
  const select = $("hotline-filter");
  if (ids !== wall.hotlines.map((h) => h.id).join(",")) {
    wall.hotlines = list;
    select.replaceChildren(cc.el("option", { value: "" }, "All hotlines"),
      ...list.map((h) => cc.el("option", { value: cc.clean(h.id) }, h.name.en || h.name.zh || h.id)));
    if (!list.some((h) => h.id === wall.hotline)) wall.hotline = "";
    select.value = wall.hotline;
  }
  select.hidden = list.length < 2;
  $("queue").classList.toggle("one-hotline", list.length < 2);
}

function mine(q) {
  return !wall.hotline || q.hotline === wall.hotline;
}

function answers(a) {
  return !wall.hotline || !Array.isArray(a.hotlines) || a.hotlines.length === 0 || a.hotlines.includes(wall.hotline);
}

function renderQueue(queue) {
  $("queue-empty").hidden = queue.length > 0;
  $("queue-body").replaceChildren(...queue.map((q) => {
    const start = wall.received - (Number(q.wait_seconds) || 0) * 1000;
    return cc.el("tr", { class: "caller-row prio-" + cc.clean(q.priority), dataset: { callId: cc.clean(q.call_id), hotline: cc.clean(q.hotline || "") } },
      cc.el("td", { class: "wait", dataset: { start: String(start) } }, cc.duration(q.wait_seconds)),
      cc.el("td", { class: "caller" }, q.caller || "withheld"),
      cc.el("td", { class: "hotline" }, hotlineName(q.hotline)),
      cc.el("td", { class: "owner" }, [q.owner_name, q.unit].filter(Boolean).join(" · ") || "unknown"),
      cc.el("td", {}, q.transfer_target ? "transfer → " + q.transfer_target : cc.label(q.ivr_choice || "–")),
      cc.el("td", { class: "priority" }, cc.label(q.priority || "normal")));
  }));
}

async function act(agent, body, path) {
  try {
    await cc.api("POST", path, body);
    say("");
  } catch (e) {
    say(e.message, true);
  }
}

function agentButtons(a) {
  const id = a.agent_id;
  const buttons = [];
  if (a.state === "paused") {
    buttons.push(cc.el("button", { class: "small go", onclick: () => act(a, { action: "ready" }, "/api/agents/" + id + "/state") }, "Unpause"));
  } else if (a.state !== "logged_out") {
    buttons.push(cc.el("button", { class: "small", onclick: () => act(a, { action: "pause", reason: "other" }, "/api/agents/" + id + "/state") }, "Pause"));
  }
  if (a.state === "on_call") {
    for (const mode of ["listen", "whisper", "barge"]) {
      buttons.push(cc.el("button", { class: "small spy", onclick: () => act(a, { agent_id: Number(id), mode }, "/api/supervise") },
        mode[0].toUpperCase() + mode.slice(1)));
    }
  }
  return buttons;
}

function renderAgents(agents) {
  $("agents-body").replaceChildren(...agents.map((a) => {
    const since = cc.sinceMs(a.since);
    const stateCls = "state state-" + cc.clean(a.state).replace(/[^a-z_]/g, "") +
      (a.reason === "missed_calls" ? " breach" : "");
    return cc.el("tr", { class: "agent-row", dataset: { agentId: cc.clean(a.agent_id) } },
      cc.el("td", { class: "agent-name" }, a.name),
      cc.el("td", {}, cc.el("span", { class: stateCls }, cc.label(a.state) + (a.reason ? " · " + cc.label(a.reason) : ""))),
      cc.el("td", { class: "in-state", dataset: since ? { since: String(since) } : {} }, since ? cc.duration((cc.serverNow() - since) / 1000) : "–"),
      cc.el("td", {}, a.current_caller || ""),
      cc.el("td", { class: "num" }, String(a.answered_today ?? 0)),
      cc.el("td", { class: "num" + (a.missed_today > 0 ? " amber-text" : "") }, String(a.missed_today ?? 0)),
      cc.el("td", { class: "num" }, cc.percent(a.two_ring_share)),
      cc.el("td", { class: "actions" }, agentButtons(a)));
  }));
}

function renderTransfers(items) {
  items = items.filter((t) => !wall.hotline || !t.hotline || t.hotline === wall.hotline);  // the hotline shown
  $("transfers-body").replaceChildren(...items.map((t) => cc.el("tr",
    { class: "transfer-row state-" + cc.clean(t.state).replace(/[^a-z_]/g, ""), dataset: { uniqueid: cc.clean(t.uniqueid) } },
    cc.el("td", {}, t.uniqueid),
    cc.el("td", {}, cc.label(t.kind)),
    cc.el("td", {}, t.from_agent_name),
    cc.el("td", {}, t.to_agent_name || (t.target && t.target.name) || "–"),
    cc.el("td", { class: "transfer-state" }, cc.label(t.state) + (t.outcome ? " · " + cc.label(t.outcome) : "")))));
  $("transfers-empty").hidden = items.some((t) => ["requested", "moving", "ringing", "consulting"].includes(t.state));
}

function renderOverdue(items) {
  const body = $("overdue-body");
  body.replaceChildren(...items.map((t) => {
    const due = Date.parse(t.due);
    return cc.el("tr", { class: "red" },
      cc.el("td", { class: "late", dataset: { due: String(due) } }, cc.duration(Number(t.late_seconds) || 0)),
      cc.el("td", {}, t.number + (t.priority === "major" ? " (major)" : "")),
      cc.el("td", {}, cc.label(t.category)),
      cc.el("td", {}, cc.label(t.status) + (t.escalated ? " · escalated" : "")),
      cc.el("td", {}, t.worker || t.department || "–"));
  }));
  $("overdue-empty").hidden = items.length > 0;
}

function renderAlerts() {
  $("alerts").replaceChildren(...wall.alerts.map((a) => cc.el("li", { class: "alert" },
    cc.el("span", { class: "at" }, a.at ? new Date(a.at).toLocaleTimeString() : ""), " ",
    a.message || cc.label(a.kind))));
}

function tick() {
  const now = Date.now();
  cc.setText($("clock"), new Date(now).toLocaleTimeString());
  for (const cell of document.querySelectorAll("td.wait[data-start]")) {
    const seconds = (now - Number(cell.dataset.start)) / 1000;
    cc.setText(cell, cc.duration(seconds));
    cell.parentElement.classList.toggle("red", seconds > wall.target);
    cell.parentElement.classList.toggle("amber", seconds > wall.target * 0.7 && seconds <= wall.target);
  }
  for (const cell of document.querySelectorAll("td.late[data-due]")) {
    cc.setText(cell, cc.duration((cc.serverNow() - Number(cell.dataset.due)) / 1000));
  }
  for (const cell of document.querySelectorAll("td.in-state[data-since]")) {
    cc.setText(cell, cc.duration((cc.serverNow() - Number(cell.dataset.since)) / 1000));
  }
}

function render(msg) {
  const all = msg.figures || {};
  renderHotlines(msg.hotlines);
  const queue = (msg.queue || []).filter(mine);
  const agents = (msg.agents || []).filter(answers);
  // One hotline shown: its own figures (figures.by_hotline), else the centre's.
  const f = wall.hotline && all.by_hotline && all.by_hotline[wall.hotline] ? all.by_hotline[wall.hotline] : all;
  renderQueue(queue);
  renderAgents(agents);
  renderFigures(f, queue.length, agents.filter((a) => a.state === "ready").length);
}

// Small print: which server answers this page and, with several, which one runs call distribution.
function renderNode(acdNode) {
  const n = wall.me && wall.me.node;
  if (!n || !n.name) return;
  let text = "node " + n.name;
  if (acdNode && acdNode !== n.name) text += " · distribution on " + acdNode;
  cc.setText($("node"), text);
}

function onMessage(msg) {
  if (msg.server_time) cc.syncClock(msg.server_time);
  if (msg.type === "snapshot") {
    renderNode(msg.acd_node);
    wall.received = Date.now();
    wall.last = msg;
    const f = msg.figures || {};
    if (f.target_wait_seconds) wall.target = Number(f.target_wait_seconds);
    render(msg);
    renderOverdue(Array.isArray(msg.overdue) ? msg.overdue : []);
    renderTransfers(Array.isArray(msg.transfers) ? msg.transfers : []);
    if (Array.isArray(msg.alerts)) {
      wall.alerts = msg.alerts.slice(-MAX_ALERTS).reverse();
      renderAlerts();
    }
    if (msg.acd === "unavailable") say("Call distribution is not running.", true);
    tick();
  } else if (msg.type === "alert") {
    wall.alerts.unshift(msg.alert || msg);
    wall.alerts = wall.alerts.slice(0, MAX_ALERTS);
    renderAlerts();
  }
}

async function main() {
  try {
    wall.me = await cc.whoami();
  } catch (e) {
    return;
  }
  cc.setText($("centre"), wall.me.centre);
  renderNode(null);
  $("btn-signout").addEventListener("click", async () => {
    try { await cc.api("POST", "/api/logout"); } finally { location.assign("/login"); }
  });
  $("hotline-filter").addEventListener("change", () => {
    wall.hotline = $("hotline-filter").value;
    if (wall.last) render(wall.last);
    if (wall.last) renderTransfers(Array.isArray(wall.last.transfers) ? wall.last.transfers : []);
    tick();
  });
  cc.live("/ws/wallboard", onMessage, (s) => cc.setText($("live"), s));
  setInterval(tick, 1000);
  tick();
}

main();
