// Shared helpers for the desk pages. No framework, no build step.
// Data from the server is only ever put into the page with textContent (never innerHTML),
// and cleaned of control and bidirectional-override characters first.
"use strict";

const cc = (() => {
  // C0/C1 controls, zero-width and bidi marks/overrides/isolates, BOM.
  const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;
  let csrf = "";

  function clean(value) {
    if (value === null || value === undefined) return "";
    return String(value).replace(UNSAFE, "");
  }

  // el("div", {class: "x", onclick: fn}, "text", child, ...): text children become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(clean(child)));
    }
    return node;
  }

  function setText(node, value) {
    node.textContent = clean(value);
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (resp.status === 401 && !path.endsWith("/login")) {
      location.assign("/login?next=" + encodeURIComponent(location.pathname));
    }
    if (!resp.ok) {
      const err = (data && data.error) || { code: "http_" + resp.status, message: resp.statusText };
      throw new ApiError(resp.status, err.code, err.message);
    }
    return data;
  }

  async function whoami() {
    const me = await api("GET", "/api/me");
    csrf = me.csrf;
    return me;
  }

  // A websocket that reconnects by itself with exponential backoff (0.5 s to 15 s, with jitter).
  function live(path, onMessage, onStatus) {
    let delay = 500;
    let socket = null;
    let stopped = false;
    function connect() {
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
      socket = new WebSocket(url);
      socket.addEventListener("open", () => {
        delay = 500;
        onStatus("live");
      });
      socket.addEventListener("message", (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (e) {
          return;
        }
        onMessage(msg);
      });
      socket.addEventListener("close", (ev) => {
        if (stopped) return;
        onStatus(ev.code === 4008 ? "reconnecting (too slow)" : "reconnecting");
        const wait = delay + Math.random() * delay * 0.3;
        delay = Math.min(delay * 2, 15000);
        setTimeout(connect, wait);
      });
    }
    connect();
    return { stop() { stopped = true; if (socket) socket.close(); } };
  }

  function money(cents) {
    if (cents === null || cents === undefined) return "–";
    const sign = cents < 0 ? "-" : "";
    const abs = Math.abs(cents);
    const yuan = Math.floor(abs / 100).toLocaleString("en-US");
    return sign + "¥" + yuan + "." + String(abs % 100).padStart(2, "0");
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + sec : m + ":" + sec;
  }

  function remaining(seconds) {
    if (seconds === null || seconds === undefined) return "no promise";
    return seconds < 0 ? "overdue " + duration(-seconds) : duration(seconds) + " left";
  }

  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (isNaN(d)) return "–";
    return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  // Server clock minus page clock, learnt from each message's server_time: times in state are
  // measured on the server's clock, so a wrong PC clock does not show wrong durations.
  let offset = 0;
  function syncClock(serverTime) {
    const t = Date.parse(serverTime || "");
    if (!isNaN(t)) offset = t - Date.now();
  }
  function serverNow() {
    return Date.now() + offset;
  }
  function sinceMs(since) {
    if (since === null || since === undefined) return null;
    if (typeof since === "number") return since * 1000;
    const t = Date.parse(since);
    return isNaN(t) ? null : t;
  }

  function percent(x) {
    return x === null || x === undefined ? "–" : Math.round(x * 100) + "%";
  }

  function label(state) {
    return clean(state || "unknown").replace(/_/g, " ");
  }

  return { clean, el, setText, api, whoami, live, money, duration, remaining, when, percent, label, ApiError,
    syncClock, serverNow, sinceMs,
    get csrf() { return csrf; } };
})();
