// console.js: the script of console.html, served from /static/ (CSP: no inline script).
"use strict";
const DATA = JSON.parse(document.getElementById("page-data").textContent);
const site = DATA.site;
const counter = DATA.counter;
const names = DATA.names;
const base = `/api/v1/sites/${encodeURIComponent(site)}/counters/${encodeURIComponent(counter)}`;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
let lang = localStorage.getItem("giliran.lang") || "id";
let detail = DATA.detail;
let inFlight = false;

const PRIORITY = {elderly: ["Lansia", "Elderly"], disability: ["Disabilitas", "Disability"],
                  pregnancy: ["Hamil", "Pregnant"], infant: ["Membawa bayi", "With infant"]};
const t = (id, en) => (lang === "en" ? en : id);
function applyLanguage() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-id]").forEach((el) => { el.textContent = el.dataset[lang]; });
  $("lang").textContent = lang === "en" ? "Bahasa Indonesia" : "English";
  render(detail);
}
function say(text, kind) { $("message").textContent = text; $("message").className = kind; }

function render(d) {
  detail = d;
  $("state").textContent = {open: t("buka", "open"), paused: t("istirahat", "paused"), closed: t("tutup", "closed")}[d.counter.status];
  $("state").className = `badge ${d.counter.status}`;
  const cur = d.current && d.current.ticket;
  $("number").textContent = cur ? cur.number : "–";
  $("meta").textContent = cur
    ? `${d.current.service_name[lang]} · ${t({called: "dipanggil", serving: "dilayani"}[cur.status], cur.status)}` +
      (cur.recalls ? ` · ${t("dipanggil ulang", "recalled")} ${cur.recalls}×` : "") +
      (cur.priority ? ` · ${PRIORITY[cur.priority][lang === "en" ? 1 : 0]}` : "")
    : t("Tidak ada tiket di loket ini.", "No ticket at this counter.");
  $("nik").textContent = cur && d.current.nik_masked ? `NIK ${d.current.nik_masked}` : "";
  $("documents").innerHTML = cur && d.current.documents.length
    ? `<b>${t("Berkas yang diperlukan", "Documents required")}:</b><ul class="docs">` +
      d.current.documents.map((doc) => `<li>${esc(doc[lang])}</li>`).join("") + "</ul>"
    : "";
  const called = cur && cur.status === "called";
  $("call-next").disabled = Boolean(cur);
  $("recall").disabled = !called;
  $("start").disabled = !called;
  $("no-show").disabled = !called || cur.recalls < d.no_show_after_recalls;
  $("no-show").title = t(`Setelah ${d.no_show_after_recalls}× panggil ulang`, `After ${d.no_show_after_recalls} recalls`);
  $("complete").disabled = !cur;
  const chosen = $("to-service").value;
  $("to-service").innerHTML = d.transfer_to.map((code) =>
    `<option value="${esc(code)}" ${code === chosen ? "selected" : ""}>${esc(names[code][lang])}</option>`).join("");
  $("transfer").disabled = !cur || !d.transfer_to.length;
  $("cancel").disabled = !cur;
  const now = Date.now();
  $("waiting").innerHTML = d.waiting.map((w) => {
    const mins = w.queued_at ? Math.floor((now - Date.parse(w.queued_at)) / 60000) : null;
    const marks = (w.priority ? ` <span class="prio">${PRIORITY[w.priority][lang === "en" ? 1 : 0]}</span>` : "") +
      (w.held ? ` <span class="held">${t("di loket lain", "at another counter")}</span>` : "") +
      (w.arrived ? "" : ` <span class="held">${t("belum check-in", "not checked in")}</span>`);
    const can = !cur && !w.held && w.arrived;
    return `<tr><td class="num">${esc(w.number)}</td><td>${esc(names[w.service][lang])}${marks}</td>` +
      `<td>${mins === null ? "" : mins + " " + t("mnt", "min")}</td>` +
      `<td><button class="small" data-call="${esc(w.ticket_id)}" ${can ? "" : "disabled"}>${t("Panggil", "Call")}</button></td></tr>`;
  }).join("") || `<tr><td>${t("Antrean kosong.", "Nobody is waiting.")}</td></tr>`;
}

async function act(path, body) {
  if (inFlight) return;  // one action at a time: a double tap never calls twice
  inFlight = true;
  try {
    // The session cookie alone is not enough for a change: the page proves it is ours (CSRF).
    const r = await fetch(base + path, {method: "POST",
                                        headers: {"Content-Type": "application/json", "X-CSRF-Token": DATA.csrf},
                                        body: body ? JSON.stringify(body) : undefined});
    if (r.status === 204) { say(t("Tidak ada yang menunggu.", "Nobody is waiting."), "ok"); }
    else if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      const p = j.error || j;
      say((lang === "en" ? p.message_en : p.message_id) || `HTTP ${r.status}`, "error");
    } else {
      const j = await r.json();
      say(j.ticket ? `${j.ticket.number}: ${t("berhasil", "done")}` : t("berhasil", "done"), "ok");
    }
  } catch (e) {
    say(t("Tidak tersambung ke server; coba lagi.", "Cannot reach the server; try again."), "error");
  } finally {
    inFlight = false;
    await refresh();
  }
}
const current = () => detail.current && detail.current.ticket.ticket_id;
const onTicket = (verb, body) => current() && act(`/tickets/${encodeURIComponent(current())}/${verb}`, body);
$("call-next").onclick = () => act("/call-next");
$("recall").onclick = () => onTicket("recall");
$("start").onclick = () => onTicket("start");
$("no-show").onclick = () => onTicket("no-show");
$("complete").onclick = () => onTicket("complete", {outcome: $("outcome").value});
$("transfer").onclick = () => onTicket("transfer", {to_service: $("to-service").value});
$("cancel").onclick = () => confirm(t("Batalkan tiket ini?", "Cancel this ticket?")) && onTicket("cancel", {reason: "dibatalkan petugas"});
$("open").onclick = () => act("/open");
$("pause").onclick = () => act("/pause");
$("close").onclick = () => act("/close");
$("lang").onclick = () => { lang = lang === "en" ? "id" : "en"; localStorage.setItem("giliran.lang", lang); applyLanguage(); };
$("waiting").onclick = (e) => {
  const id = e.target.dataset && e.target.dataset.call;
  if (id) act(`/tickets/${encodeURIComponent(id)}/call`);
};
const KEYS = {n: "call-next", r: "recall", s: "start", x: "no-show", d: "complete", t: "transfer"};
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.altKey || e.metaKey || ["SELECT", "INPUT", "TEXTAREA"].includes(e.target.tagName)) return;
  const id = KEYS[e.key.toLowerCase()];
  if (id && !$(id).disabled) { e.preventDefault(); $(id).click(); }
});

async function refresh() {
  try {
    const r = await fetch(base);
    if (r.ok) render(await r.json());
  } catch (e) { /* the stream's reconnect brings the next refresh */ }
}
// Any change at the site (another counter's call, a new ticket) refreshes the waiting list.
const source = new EventSource(`/api/v1/sites/${encodeURIComponent(site)}/board/stream`);
source.addEventListener("board", refresh);
applyLanguage();
