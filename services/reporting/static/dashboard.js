// dashboard.js: the script of dashboard.html, served from /static/ (CSP: no inline script).
"use strict";
const DATA = JSON.parse(document.getElementById("page-data").textContent);
// Server push: the browser's EventSource reconnects by itself after a drop or a restart.
const site = DATA.site;
const statusEl = document.getElementById("status");
const minutes = (s) => (s === null ? "–" : String(Math.floor(s / 60)));
function render(view) {
  document.getElementById("waiting").textContent = view.waiting;
  document.getElementById("longest").textContent = minutes(view.longest_wait_seconds);
  document.getElementById("counters").textContent = view.counters_active;
  document.getElementById("open").textContent = view.counters_open;
  document.getElementById("paused").textContent = view.counters_paused;
  document.getElementById("serving").textContent = view.serving;
  document.getElementById("served").textContent = view.served;
  document.getElementById("noshow").textContent = view.no_show;
  const rows = view.lines.map((l) =>
    `<tr><td>${l.service}</td><td class="n">${l.waiting}</td><td class="n">${minutes(l.longest_wait_seconds)}</td></tr>`);
  document.getElementById("lines").innerHTML = rows.join("");
  document.getElementById("chart").src = `/charts/${site}/waiting.svg?v=${view.version}`;
  document.body.dataset.version = view.version;
  const at = new Date(view.at).toLocaleTimeString("id-ID", {timeZone: "Asia/Jakarta"});
  statusEl.textContent = `diperbarui ${at} WIB`;
  statusEl.className = "";
}
const source = new EventSource(`/api/v1/sites/${site}/live/stream`);
source.addEventListener("live", (e) => render(JSON.parse(e.data)));
source.onerror = () => { statusEl.textContent = "terputus, menyambung ulang… / reconnecting…"; statusEl.className = "stale"; };
