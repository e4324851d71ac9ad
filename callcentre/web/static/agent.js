// The agent desk: state buttons, the screen-pop card, tickets, owner search.
"use strict";

const desk = {
  me: null,
  categories: {},
  call: null,          // the current screen-pop's call
  target: null,        // {owner_id, unit_id, name, unit} the ticket form is for
  updating: null,      // ticket number being updated
  stateSince: null,    // ms epoch
  transfer: null,      // the transfer of the current call in progress (from the server's "transfer" frames)
};

const $ = (id) => document.getElementById(id);

function say(text, isError) {
  const m = $("message");
  cc.setText(m, text);
  m.className = "message" + (isError ? " error" : "");
}

function setState(agent) {
  const badge = $("state");
  const state = agent ? agent.state : "logged_out";
  badge.dataset.state = cc.clean(state);
  badge.className = "state state-" + cc.clean(state).replace(/[^a-z_]/g, "");
  let text = cc.label(state);
  if (agent && agent.reason) text += " (" + cc.label(agent.reason) + ")";
  cc.setText(badge, text);
  desk.stateSince = agent ? cc.sinceMs(agent.since) : null;
  tick();
}

function tick() {
  cc.setText($("state-time"), desk.stateSince ? cc.duration((cc.serverNow() - desk.stateSince) / 1000) : "");
  for (const node of document.querySelectorAll("[data-until]")) {
    const left = (Number(node.dataset.until) - Date.now()) / 1000;
    cc.setText(node, cc.remaining(left));
    node.classList.toggle("overdue", left < 0);
  }
}

async function post(body) {
  const res = await cc.api("POST", "/api/agents/" + desk.me.user.id + "/state", body);
  cc.syncClock(res.server_time);
  setState(res.agent);
  return res.agent;
}

async function action(name) {
  try {
    const body = { action: name };
    if (name === "pause") body.reason = $("pause-reason").value;
    if (name === "ready" && $("state").dataset.state === "logged_out") {
      // Logged out of the queue: log in first, then become ready.
      const agent = await post({ action: "login" });
      if (!agent || agent.state !== "ready") await post(body);
    } else {
      await post(body);
    }
    say("");
  } catch (e) {
    say(e.code === "illegal_state_change" ? "Not possible now: " + e.message : e.message, true);
  }
}

function ticketRow(t) {
  // Counted from the server's remaining time at receipt: immune to a wrong PC clock.
  const until = t.open && t.remaining_seconds !== null ? Date.now() + t.remaining_seconds * 1000 : null;
  return cc.el("li", { class: "ticket" + (t.overdue ? " overdue" : "") },
    cc.el("strong", {}, t.number), " ",
    cc.el("span", { class: "tag" }, cc.label(t.kind)), " ",
    cc.label(t.category), " · ", cc.label(t.status), " · ",
    cc.el("span", { class: "prio-" + cc.clean(t.priority) }, cc.label(t.priority)), " · ",
    until ? cc.el("span", { class: "remaining", dataset: { until: String(until) } }, cc.remaining(t.remaining_seconds))
          : cc.el("span", { class: "muted" }, "no promise"),
    t.description ? cc.el("div", { class: "notes" }, t.description) : null,
    t.open ? cc.el("button", { class: "small", onclick: () => startUpdate(t) }, "Update") : null);
}

function ownerCard(o, selectable) {
  const units = cc.el("table", { class: "units" },
    cc.el("thead", {}, cc.el("tr", {}, cc.el("th", {}, "Unit"), cc.el("th", {}, "Role"),
      cc.el("th", {}, "Balance"), cc.el("th", {}, "Due"), cc.el("th", {}, ""))),
    cc.el("tbody", {}, o.units.map((u) => cc.el("tr", { class: u.matched ? "matched" : "" },
      cc.el("td", { class: "unit" }, u.building + "-" + u.unit),
      cc.el("td", {}, cc.label(u.role)),
      cc.el("td", { class: "balance" + (u.fee_balance_cents > 0 ? " owed" : "") + (u.fee_overdue ? " overdue" : "") },
        cc.money(u.fee_balance_cents)),
      cc.el("td", {}, u.fee_due_date || "–"),
      cc.el("td", {}, selectable ? cc.el("button", { class: "small", onclick: () => selectTarget(o, u) }, "Use") : null)))));
  return cc.el("article", { class: "owner", dataset: { ownerId: String(o.owner_id) } },
    cc.el("h3", { class: "owner-name" }, o.name, o.vip ? cc.el("span", { class: "badge vip" }, "VIP") : null),
    units,
    cc.el("p", { class: "phones" }, "Phones: ", o.phones.length ? o.phones.map((p) => p.number).join(", ") : "none"),
    o.notes ? cc.el("p", { class: "notes" }, o.notes) : null,
    cc.el("h4", {}, "Open tickets"),
    o.open_tickets.length ? cc.el("ul", { class: "tickets" }, o.open_tickets.map(ticketRow))
                          : cc.el("p", { class: "muted" }, "none"));
}

function renderPop(call) {
  if (!desk.call || desk.call.uniqueid !== call.uniqueid) desk.transfer = null;
  desk.call = call;
  const body = $("pop-body");
  $("pop-empty").hidden = true;
  const pop = $("pop");
  pop.className = "card pop ringing";
  const who = call.caller_name || "(no name)";
  const header = cc.el("div", { class: "caller" },
    cc.el("span", { class: "caller-name", id: "pop-caller-name" }, who), " ",
    cc.el("span", { class: "caller-number" }, call.caller_id || call.caller_id_raw || "withheld"),
    call.repeat_caller ? cc.el("span", { class: "badge repeat", id: "pop-repeat" }, "Repeat caller (24 h)") : null);
  const path = cc.el("p", { class: "ivr" }, "IVR: ",
    call.ivr_path && call.ivr_path.length ? call.ivr_path.join(" › ") : "–",
    call.ivr_tickets && call.ivr_tickets.length ? cc.el("span", {}, " · ticket made in IVR: ", call.ivr_tickets.join(", ")) : null);
  const owners = call.owners && call.owners.length
    ? call.owners.map((o) => ownerCard(o, true))
    : [cc.el("p", { class: "unknown" }, "Unknown caller: search an owner on the right and attach this number.")];
  const extra = call.unowned_tickets && call.unowned_tickets.length
    ? [cc.el("h4", {}, "Open tickets from this number"), cc.el("ul", { class: "tickets" }, call.unowned_tickets.map(ticketRow))]
    : [];
  const calls = cc.el("div", { class: "calls" }, cc.el("h4", {}, "Last calls"),
    call.last_calls && call.last_calls.length
      ? cc.el("ol", {}, call.last_calls.map((c) => cc.el("li", {}, cc.when(c.started_at), " · ",
          cc.label(c.outcome || "unknown"), c.ivr_path ? " · " + c.ivr_path : "")))
      : cc.el("p", { class: "muted" }, "none"));
  const via = call.transfer
    ? cc.el("p", { class: "transferred", id: "pop-transferred" },
        (call.transfer.consult ? "Consultation from " : "Transferred by ") + call.transfer.from +
        (call.transfer.kind ? " (" + cc.label(call.transfer.kind) + ")" : ""))
    : null;
  body.replaceChildren(header, via, path, ...owners, ...extra, calls);
  showTransfer(true);
  if (call.owners && call.owners.length) {
    const o = call.owners[0];
    const u = o.units.find((x) => x.matched) || o.units[0];
    selectTarget(o, u);
  } else {
    desk.target = null;
    showTarget();
  }
  tick();
}

function selectTarget(owner, unit) {
  desk.target = { owner_id: owner.owner_id, unit_id: unit ? unit.unit_id : null, name: owner.name,
    unit: unit ? unit.building + "-" + unit.unit : "" };
  showTarget();
}

function showTarget() {
  const t = desk.target;
  cc.setText($("t-for"), t ? "For: " + t.name + (t.unit ? " · " + t.unit : "") : "For: no owner selected");
}

function fillCategories() {
  const kind = $("t-kind").value;
  const list = desk.categories[kind] || [];
  $("t-category").replaceChildren(...list.map((c) => cc.el("option", { value: c.code }, cc.label(c.code))));
  const first = list[0];
  if (first) $("t-priority").value = first.priority;
}

async function createTicket(ev) {
  ev.preventDefault();
  const body = {
    kind: $("t-kind").value,
    category: $("t-category").value,
    priority: $("t-priority").value,
    notes: $("t-notes").value || null,
    resolved_first_contact: $("t-resolved").checked,
  };
  if (desk.target) { body.owner_id = desk.target.owner_id; body.unit_id = desk.target.unit_id; }
  if (desk.call) {
    if (desk.call.caller_id) body.phone = desk.call.caller_id;
    if (desk.call.uniqueid) body.call_uniqueid = desk.call.uniqueid;
  }
  try {
    const res = await cc.api("POST", "/api/tickets", body);
    say("Ticket " + res.ticket.number + " saved (" + cc.label(res.ticket.status) + ").");
    $("t-notes").value = "";
    $("t-resolved").checked = false;
    await refreshCard();
  } catch (e) {
    say(e.message, true);
  }
}

function startUpdate(t) {
  desk.updating = t.number;
  cc.setText($("u-number"), t.number);
  $("update-form").hidden = false;
  $("u-status").value = "";
  $("u-priority").value = "";
  $("u-notes").value = "";
}

async function saveUpdate(ev) {
  ev.preventDefault();
  const body = {};
  if ($("u-status").value) body.status = $("u-status").value;
  if ($("u-priority").value) body.priority = $("u-priority").value;
  if ($("u-notes").value) body.notes = $("u-notes").value;
  try {
    const res = await cc.api("PATCH", "/api/tickets/" + encodeURIComponent(desk.updating), body);
    say("Ticket " + res.ticket.number + " updated.");
    $("update-form").hidden = true;
    await refreshCard();
  } catch (e) {
    say(e.message, true);
  }
}

async function refreshCard() {
  if (!desk.call) return;
  const call = desk.call;
  if (call.caller_id) {
    try {
      const found = await cc.api("GET", "/api/owners/lookup?phone=" + encodeURIComponent(call.caller_id));
      renderPop(Object.assign({}, call, { owners: found.owners, unowned_tickets: found.unowned_tickets }));
    } catch (e) {
      say(e.message, true);
    }
  }
}

async function search(ev) {
  ev.preventDefault();
  const q = $("search-q").value.trim();
  if (!q) return;
  try {
    const res = await cc.api("GET", "/api/owners/search?q=" + encodeURIComponent(q));
    const list = $("search-results");
    if (!res.owners.length) {
      list.replaceChildren(cc.el("li", { class: "muted" }, "No owner found."));
      return;
    }
    list.replaceChildren(...res.owners.map((o) => cc.el("li", {},
      cc.el("strong", {}, o.name), " ",
      o.units.map((u) => u.building + "-" + u.unit).join(", "), " ",
      cc.el("button", { class: "small", onclick: () => { selectTarget(o, o.units[0]); } }, "Use for ticket"), " ",
      desk.call && desk.call.caller_id
        ? cc.el("button", { class: "small", onclick: () => attach(o) }, "Attach " + desk.call.caller_id)
        : null)));
  } catch (e) {
    say(e.message, true);
  }
}

async function attach(owner) {
  try {
    const res = await cc.api("POST", "/api/owners/" + owner.owner_id + "/phones", { phone: desk.call.caller_id });
    say(res.created ? "Number attached to " + owner.name + "." : "That number was already on file.");
    await refreshCard();
  } catch (e) {
    say(e.message, true);
  }
}

// ---- transfers: the browser sends the call's uniqueid, a kind and a target id; nothing else.
async function loadTargets() {
  const select = $("x-target");
  try {
    const t = await cc.api("GET", "/api/transfer-targets");
    const group = (label, items) => items.length ? cc.el("optgroup", { label }, items) : null;
    // Agents who can take a call now or soon (ready, ringing, on a call, wrapping up); paused and
    // logged-out agents are refused by the server anyway.
    const agents = t.agents.filter((a) => String(a.agent_id) !== String(desk.me.user.id) &&
      ["ready", "ringing", "on_call", "wrap_up"].includes(a.state))
      .map((a) => cc.el("option", { value: JSON.stringify({ agent: String(a.agent_id) }) }, a.name + " · " + cc.label(a.state)));
    const skills = t.skills.map((g) => cc.el("option", { value: JSON.stringify({ skill: g.code }) },
      cc.label(g.code) + " group (" + g.ready + " ready)"));
    const depts = t.departments.map((d) => cc.el("option", { value: JSON.stringify({ department: d.code }) }, d.name));
    select.replaceChildren(...[group("Agents", agents), group("Skill groups", skills), group("Departments", depts)].filter(Boolean));
  } catch (e) {
    say(e.message, true);
  }
}

function showTransfer(on) {
  $("transfer").hidden = !on;
  if (on) loadTargets();
  renderTransfer(desk.transfer);
}

function renderTransfer(t) {
  const open = t && ["requested", "moving", "ringing", "consulting"].includes(t.state);
  $("x-blind").disabled = !!open;
  $("x-consult").disabled = !!open;
  $("x-complete").disabled = !(t && t.kind === "attended" && t.state === "consulting");
  $("x-cancel").disabled = !(t && t.kind === "attended" && open);
  const to = t ? (t.to_agent_name || (t.target && t.target.name) || "") : "";
  cc.setText($("x-status"), t ? cc.label(t.kind) + " transfer to " + to + ": " + cc.label(t.state) +
    (t.outcome ? " (" + cc.label(t.outcome) + ")" : "") : "");
}

async function transfer(kind) {
  if (!desk.call) return;
  let target;
  try {
    target = JSON.parse($("x-target").value);
  } catch (e) {
    say("Choose who to transfer to.", true);
    return;
  }
  try {
    const res = await cc.api("POST", "/api/calls/" + encodeURIComponent(desk.call.uniqueid) + "/transfer", { kind, target });
    desk.transfer = res.transfer;
    renderTransfer(desk.transfer);
    say("");
  } catch (e) {
    say(e.message, true);
  }
}

async function transferStep(step) {
  if (!desk.call) return;
  try {
    const res = await cc.api("POST", "/api/calls/" + encodeURIComponent(desk.call.uniqueid) + "/transfer/" + step);
    desk.transfer = res.transfer;
    renderTransfer(desk.transfer);
    say("");
  } catch (e) {
    say(e.message, true);
  }
}

function onMessage(msg) {
  if (msg.server_time) cc.syncClock(msg.server_time);
  if (msg.type === "snapshot") {
    setState(msg.agent);
    if (msg.screen_pop && msg.screen_pop.call) renderPop(msg.screen_pop.call);
  } else if (msg.type === "screen_pop" && msg.call) {
    renderPop(msg.call);
  } else if (msg.type === "state") {
    setState(msg.agent);
  } else if (msg.type === "call_ended" || msg.type === "screen_clear") {
    $("pop").className = "card pop ended";
    // After a blind transfer the call is over for this agent, but its transfer's outcome still comes.
    if (!desk.transfer) showTransfer(false);
  } else if (msg.type === "transfer" && msg.transfer) {
    if (desk.call && msg.transfer.uniqueid === desk.call.uniqueid && String(msg.transfer.from_agent_id) === String(desk.me.user.id)) {
      desk.transfer = msg.transfer;
      renderTransfer(desk.transfer);
      if (["completed", "fell_back"].includes(msg.transfer.state)) $("pop").className = "card pop ended";
    }
  }
}

async function main() {
  try {
    desk.me = await cc.whoami();
  } catch (e) {
    return; // redirected to the log-in page
  }
  cc.setText($("agent-name"), desk.me.user.name);
  cc.setText($("centre"), desk.me.centre);
  desk.categories = desk.me.categories;
  fillCategories();
  cc.syncClock(desk.me.server_time);
  setState(desk.me.agent);
  $("btn-ready").addEventListener("click", () => action("ready"));
  $("btn-pause").addEventListener("click", () => action("pause"));
  $("btn-wrapup").addEventListener("click", () => action("end_wrapup"));
  $("btn-acd-logout").addEventListener("click", () => action("logout"));
  $("btn-signout").addEventListener("click", async () => {
    try { await cc.api("POST", "/api/logout"); } finally { location.assign("/login"); }
  });
  $("t-kind").addEventListener("change", fillCategories);
  $("ticket-form").addEventListener("submit", createTicket);
  $("update-form").addEventListener("submit", saveUpdate);
  $("u-cancel").addEventListener("click", () => { $("update-form").hidden = true; });
  $("search-form").addEventListener("submit", search);
  $("x-blind").addEventListener("click", () => transfer("blind"));
  $("x-consult").addEventListener("click", () => transfer("attended"));
  $("x-complete").addEventListener("click", () => transferStep("complete"));
  $("x-cancel").addEventListener("click", () => transferStep("cancel"));
  cc.live("/ws/agent", onMessage, (s) => cc.setText($("live"), s));
  setInterval(tick, 1000);
}

main();
