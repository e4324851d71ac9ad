// The supervisor's reports: the daily reconciliation and the monthly statistics with charts.
// Everything from the server goes into the page as text (cc.el / cc.setText), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const KIND_NAMES = { kind: "Kind", category: "Category", status: "Status" };
const GROUP_NAMES = { category: "Category", department: "Department", building: "Building", agent: "Agent" };
// Requests for a day or month the user has since left are dropped when they answer.
const latest = { daily: 0, monthly: 0 };
// Several hotlines: the reports of one ("" every hotline); the list comes with the daily report.
const scope = { hotline: "", known: "" };

function hotlineQuery() {
  return scope.hotline ? "&hotline=" + encodeURIComponent(scope.hotline) : "";
}

function renderHotlines(hotlines) {
  const list = Array.isArray(hotlines) ? hotlines : [];
  const ids = list.map((h) => h.id).join(",");
  const select = $("hotline");
  if (ids !== scope.known) {
    scope.known = ids;
    select.replaceChildren(cc.el("option", { value: "" }, "All hotlines"),
      ...list.map((h) => cc.el("option", { value: cc.clean(h.id) }, h.name.en || h.name.zh || h.id)));
    select.value = scope.hotline;
  }
  select.hidden = list.length < 2;
}

function say(text, isError) {
  const m = $("message");
  cc.setText(m, text);
  m.className = "message" + (isError ? " error" : "");
}

function figure(id, count, badWhenAbove) {
  const box = $(id);
  cc.setText(box.querySelector(".value"), String(count));
  box.className = "figure " + (badWhenAbove === undefined ? "" : count > badWhenAbove ? "red" : "ok");
}

function fill(bodyId, emptyId, rows) {
  $(bodyId).replaceChildren(...rows);
  $(emptyId).hidden = rows.length > 0;
}

function countRows(by, counts) {
  return Object.keys(counts || {}).sort().map((key) =>
    cc.el("tr", {}, cc.el("td", {}, KIND_NAMES[by]), cc.el("td", {}, cc.label(key)),
      cc.el("td", { class: "num" }, String(counts[key]))));
}

function renderDaily(d) {
  $("day").value = d.date;
  renderHotlines(d.hotlines);
  const tag = d.hotline ? "-" + cc.clean(d.hotline) : "";
  $("daily-csv").href = "/api/reports/daily.csv?date=" + encodeURIComponent(d.date) + hotlineQuery();
  $("daily-csv").setAttribute("download", "daily-" + d.date + tag + ".csv");
  cc.setText($("daily-state"), d.clean ? "all clear" : "needs attention");
  $("daily-state").classList.toggle("amber-text", !d.clean);
  const missing = d.calls_without_ticket || [];
  figure("d-intake", d.intake);
  figure("d-not-ack", d.not_acknowledged.length, 0);
  figure("d-not-disp", d.not_dispatched.length, 0);
  figure("d-past", d.past_promise.length, 0);
  figure("d-missing", missing.length, 0);
  fill("d-intake-body", "d-intake-empty", [
    ...countRows("kind", d.by_kind), ...countRows("category", d.by_category), ...countRows("status", d.by_status),
  ]);
  const waiting = [
    ...d.not_acknowledged.map((n) => [n, "acknowledgement"]),
    ...d.not_dispatched.map((n) => [n, "dispatch to a worker"]),
  ];
  fill("d-waiting-body", "d-waiting-empty", waiting.map(([n, what]) =>
    cc.el("tr", { class: "ticket-row" }, cc.el("td", { class: "ticket-no" }, n), cc.el("td", {}, what))));
  fill("d-past-body", "d-past-empty", d.past_promise.map((n) =>
    cc.el("tr", { class: "ticket-row red" }, cc.el("td", { class: "ticket-no" }, n))));
  fill("d-missing-body", "d-missing-empty", missing.map((m) =>
    cc.el("tr", { class: "call-row" },
      cc.el("td", {}, m.started_at ? new Date(m.started_at).toLocaleTimeString() : "–"),
      cc.el("td", { class: "caller" }, m.caller_id || "withheld"),
      cc.el("td", {}, cc.label(m.action)),
      cc.el("td", {}, m.uniqueid))));
}

async function loadDaily(day) {
  const seq = ++latest.daily;
  try {
    const d = await cc.api("GET", "/api/reports/daily?date=" + (day ? encodeURIComponent(day) : "") + hotlineQuery());
    if (seq !== latest.daily) return null;
    renderDaily(d);
    say("");
    return d;
  } catch (e) {
    if (seq === latest.daily) say(e.message, true);
    return null;
  }
}

function share(x) {
  return cc.percent(x);
}

function groupingPanel(g, month) {
  const img = cc.el("img", { src: g.svg, alt: "Chart: tickets, resolved and promises kept by " + g.grouping + ", " + month,
    class: "chart", width: 800, height: 600 });
  // pygal's SVG has a viewBox but no size: give it its 4:3 box, at most the panel's width, on its light
  // background. (Set through the CSSOM: the page's CSP forbids style attributes in markup.)
  img.style.width = "100%";
  img.style.maxWidth = "720px";
  img.style.height = "auto";
  img.style.background = "#fff";
  img.style.borderRadius = "8px";
  const rows = (g.rows || []).map((r) => cc.el("tr", { class: r.group === "(total)" ? "total-row" : "" },
    cc.el("td", {}, r.group),
    cc.el("td", { class: "num" }, String(r.tickets)),
    cc.el("td", { class: "num" }, String(r.resolved)),
    cc.el("td", { class: "num" }, share(r.promise_kept_share)),
    cc.el("td", { class: "num" }, share(r.two_ring_share)),
    cc.el("td", { class: "num" }, share(r.first_contact_share)),
    cc.el("td", { class: "num" }, String(r.repeat_complaints)),
    cc.el("td", { class: "num" }, r.satisfaction_average === null ? "–" : Number(r.satisfaction_average).toFixed(2))));
  const tag = scope.hotline ? "-" + cc.clean(scope.hotline) : "";
  const link = cc.el("a", { href: g.csv, class: "amber-text", download: "monthly-" + month + tag + "-" + g.grouping + ".csv" },
    "Download CSV");
  const table = cc.el("table", { class: "big" },
    cc.el("thead", {}, cc.el("tr", {}, ...["", "Tickets", "Resolved", "Promise kept", "Two rings", "First contact",
      "Repeat compl.", "Satisfaction"].map((h) => cc.el("th", {}, h)))),
    cc.el("tbody", {}, rows));
  // Chart and table side by side when there is room, one above the other when not.
  const body = cc.el("div", { class: "grouping-body" }, img, table);
  Object.assign(body.style, { display: "flex", flexWrap: "wrap", gap: "1em", alignItems: "flex-start" });
  Object.assign(img.style, { flex: "1 1 420px" });
  Object.assign(table.style, { flex: "1 1 520px", width: "auto" });
  return cc.el("section", { class: "panel grouping", dataset: { grouping: g.grouping } },
    cc.el("h2", {}, "By " + (GROUP_NAMES[g.grouping] || g.grouping).toLowerCase(), " · ", link), body);
}

async function loadMonthly(month) {
  const seq = ++latest.monthly;
  try {
    const m = await cc.api("GET", "/api/reports/monthly?month=" + (month ? encodeURIComponent(month) : "") + hotlineQuery());
    if (seq !== latest.monthly) return;
    $("month").value = m.month;
    $("m-groupings").replaceChildren(...m.groupings.map((g) => groupingPanel(g, m.month)));
    say("");
  } catch (e) {
    if (seq === latest.monthly) say(e.message, true);
  }
}

function tick() {
  cc.setText($("clock"), new Date().toLocaleTimeString());
}

async function main() {
  let me;
  try {
    me = await cc.whoami();
  } catch (e) {
    return;
  }
  cc.setText($("centre"), me.centre);
  $("btn-signout").addEventListener("click", async () => {
    try { await cc.api("POST", "/api/logout"); } finally { location.assign("/login"); }
  });
  $("day").addEventListener("change", () => { if ($("day").value) loadDaily($("day").value); });
  $("hotline").addEventListener("change", () => {
    scope.hotline = $("hotline").value;
    loadDaily($("day").value || null);
    if (/^\d{4}-\d{2}$/.test($("month").value)) loadMonthly($("month").value);
  });
  $("month").addEventListener("change", () => {
    const v = $("month").value;
    if (/^\d{4}-\d{2}$/.test(v)) loadMonthly(v);
    else say("Month must be YYYY-MM", true);
  });
  setInterval(tick, 1000);
  tick();
  const d = await loadDaily(null);  // the server's today, in the centre's time zone
  await loadMonthly(d ? d.date.slice(0, 7) : null);
}

main();
