"use strict";
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = document.getElementById("login-error");
  cc.setText(error, "");
  const button = document.getElementById("login-submit");
  button.disabled = true;
  try {
    const res = await cc.api("POST", "/api/login", {
      login: document.getElementById("login").value,
      password: document.getElementById("password").value,
    });
    const next = new URLSearchParams(location.search).get("next");
    // Only same-site paths: never redirect to another site named in the URL.
    const target = next && /^\/(agent|wallboard|reports|calls)$/.test(next) ? next : res.home;
    location.assign(target);
  } catch (e) {
    cc.setText(error, e.code === "too_many_attempts" ? "Too many attempts: wait a minute." : e.message);
  } finally {
    button.disabled = false;
  }
});
