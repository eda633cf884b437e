// The live page: re-read /api/status every 2 s and update the page in place (textContent only: nothing the unit
// reports is ever parsed as HTML).
"use strict";
(function () {
  function text(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = value === null || value === undefined ? "-" : String(value); }
  }
  function rows(tableId, entries, cells, empty) {
    var body = document.querySelector("#" + tableId + " tbody");
    if (!body) { return; }
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (!entries.length) {
      var tr0 = document.createElement("tr"), td0 = document.createElement("td");
      td0.colSpan = 4; td0.className = "muted"; td0.textContent = empty;
      tr0.appendChild(td0); body.appendChild(tr0); return;
    }
    entries.forEach(function (e) {
      var tr = document.createElement("tr");
      cells(e).forEach(function (c) {
        var td = document.createElement("td");
        td.textContent = c.text === null || c.text === undefined ? "" : String(c.text);
        if (c.cls) { td.className = c.cls; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }
  function apply(s) {
    text("status", s.status || "log only");
    text("reason", s.reason || "");
    text("last-window", s.last_window_age_s === null || s.last_window_age_s === undefined ? "-" : s.last_window_age_s + " s ago");
    text("latency", s.latency_ms === null || s.latency_ms === undefined ? "-" : s.latency_ms + " ms");
    text("disk-free", s.disk_free_percent === null || s.disk_free_percent === undefined ? "-" : s.disk_free_percent + " %");
    text("clock", s.clock || "-");
    text("newest", s.newest_detection_label || "-");
    text("newest-time", s.newest_detection_utc || "");
    text("windows", s.windows);
    text("detections", s.detections);
    text("uptime", s.uptime_s);
    var sensors = Object.keys(s.sensors || {}).map(function (k) { return [k, s.sensors[k]]; });
    rows("sensors", sensors, function (e) {
      return [{ text: e[0] }, { text: e[1].state, cls: "state-" + e[1].state }, { text: e[1].restarts }, { text: e[1].last_error || "" }];
    }, "no sensors (no daemon)");
    var queues = Object.keys(s.queues || {}).map(function (k) { return [k, s.queues[k]]; });
    rows("queues", queues, function (e) { return [{ text: e[0] }, { text: e[1].size }, { text: e[1].dropped }]; }, "no queues (no daemon)");
    text("updated", "updated " + new Date().toLocaleTimeString());
  }
  function poll() {
    fetch("/api/status", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(apply)
      .catch(function (e) { text("updated", "status unavailable (" + e.message + ")"); })
      .finally(function () { window.setTimeout(poll, 2000); });
  }
  document.addEventListener("DOMContentLoaded", poll);
})();
