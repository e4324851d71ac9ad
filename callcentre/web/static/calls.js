// Calls & recordings: the call history of a day, a ticket with its call's recordings, and the players.
// The audio is asked for by recording id only (/api/recordings/<id>); the server finds the file itself.
// Everything from the server goes into the page as text (cc.el / cc.setText), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const latest = { history: 0, ticket: 0 };

function say(text, isError) {
  const m = $("message");
  cc.setText(m, text);
  m.className = "message" + (isError ? " error" : "");
}

function localDay(date) {
  const d = date || new Date(cc.serverNow());
  return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0");
}

// One recording: a player when there is a file to play, otherwise why not.
function recordingItem(r) {
  const facts = [r.agent ? "agent " + r.agent : null, r.seconds !== null ? cc.duration(r.seconds) + " recorded" : null,
    r.talk_seconds !== null ? cc.duration(r.talk_seconds) + " talk" : null].filter(Boolean).join(" · ");
  const status = cc.el("span", { class: "tag rec-" + cc.clean(r.status) }, cc.label(r.status));
  const parts = [status, " ", facts];
  if (r.reason) parts.push(cc.el("div", { class: "notes" }, r.reason));
  if (r.playable && r.url) {
    // src is built from the numeric id the server gave, nothing else
    parts.push(cc.el("audio", { controls: true, preload: "none", src: "/api/recordings/" + Number(r.id) }));
    for (const leg of r.legs || []) {
      if (leg.side !== "caller" && leg.side !== "agent") continue;
      parts.push(cc.el("div", { class: "leg" }, leg.side === "caller" ? "Caller only " : "Agent only ",
        cc.el("audio", { controls: true, preload: "none", src: "/api/recordings/" + Number(r.id) + "?leg=" + leg.side })));
    }
  }
  return cc.el("li", { class: "recording", dataset: { id: String(Number(r.id)) } }, ...parts);
}

function recordingsCell(list) {
  if (!list.length) return cc.el("td", { class: "muted" }, "–");
  return cc.el("td", {}, cc.el("ul", { class: "recordings" }, list.map(recordingItem)));
}

function ticketLink(number) {
  return cc.el("button", { class: "small link", onclick: () => { $("ticket-no").value = number; openTicket(number); } }, number);
}

async function loadHistory(day, phone) {
  const n = ++latest.history;
  const q = new URLSearchParams({ day });
  if (phone) q.set("phone", phone);
  try {
    const res = await cc.api("GET", "/api/call-history?" + q.toString());
    if (n !== latest.history) return;
    cc.setText($("calls-title"), res.day + (res.phone ? " · " + res.phone : ""));
    const rows = res.calls.map((c) => cc.el("tr", { class: "call-row", dataset: { uniqueid: c.uniqueid } },
      cc.el("td", {}, c.started_at ? new Date(c.started_at).toLocaleTimeString() : "–"),
      cc.el("td", { class: "caller" }, c.caller_id || "withheld"),
      cc.el("td", {}, cc.label(c.outcome || "–")),
      cc.el("td", {}, c.answered_by || "–"),
      cc.el("td", {}, c.tickets.map(ticketLink)),
      recordingsCell(c.recordings)));
    $("calls-body").replaceChildren(...rows);
    $("calls-empty").hidden = rows.length > 0;
    say("");
  } catch (e) {
    if (n === latest.history) say(e.message, true);
  }
}

async function openTicket(number) {
  const n = ++latest.ticket;
  try {
    const [ticket, recs] = await Promise.all([
      cc.api("GET", "/api/tickets/" + encodeURIComponent(number)),
      cc.api("GET", "/api/tickets/" + encodeURIComponent(number) + "/recordings"),
    ]);
    if (n !== latest.ticket) return;
    cc.setText($("ticket-title"), ticket.number);
    const facts = [["Kind", ticket.kind], ["Category", ticket.category], ["Priority", ticket.priority],
      ["Status", cc.label(ticket.status)], ["Caller", ticket.caller_id || "withheld"], ["Made", cc.when(ticket.created_at)],
      ["Call", recs.call_uniqueid || "–"], ["Notes", ticket.description || "–"]];
    $("ticket-facts").replaceChildren(...facts.flatMap(([k, v]) => [cc.el("dt", {}, k), cc.el("dd", { class: k === "Notes" ? "notes" : "" }, v)]));
    const items = recs.recordings.map(recordingItem);
    $("ticket-recordings").replaceChildren(...items);
    $("ticket-recordings-empty").hidden = items.length > 0;
    $("ticket-panel").hidden = false;
    say("");
  } catch (e) {
    if (n === latest.ticket) say(e.code === "not_found" || e.code === "ticket_not_found" ? "No ticket " + number : e.message, true);
  }
}

async function main() {
  const me = await cc.whoami();
  cc.syncClock(me.server_time);
  cc.setText($("centre"), me.centre);
  const supervisor = me.user.role === "supervisor" || me.user.role === "admin";
  $("to-wallboard").hidden = !supervisor;
  $("to-reports").hidden = !supervisor;
  $("btn-signout").addEventListener("click", async () => {
    try { await cc.api("POST", "/api/logout"); } finally { location.assign("/login"); }
  });
  setInterval(() => cc.setText($("clock"), new Date(cc.serverNow()).toLocaleTimeString()), 1000);
  $("day").value = localDay();
  $("history-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadHistory($("day").value, $("phone").value.trim());
  });
  $("ticket-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const number = $("ticket-no").value.trim().toUpperCase();
    if (number) openTicket(number);
  });
  const q = new URLSearchParams(location.search);
  if (q.get("ticket")) {
    $("ticket-no").value = q.get("ticket");
    openTicket(q.get("ticket"));
  }
  loadHistory($("day").value, "");
}

main().catch((e) => say(e.message, true));
