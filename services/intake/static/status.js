// status.js: the script of status.html, served from /static/ (CSP: no inline script).
"use strict";
const DATA = JSON.parse(document.getElementById("page-data").textContent);
// Server push: the page redraws each ticket whenever the server sends the status anew.
const lang = DATA.lang;
const T = {
  id: {waiting: "Menunggu", called: "Dipanggil! Silakan ke", serving: "Sedang dilayani", completed: "Selesai",
       no_show: "Tidak hadir", transferred: "Dialihkan", cancelled: "Dibatalkan", ahead: "orang di depan Anda",
       eta: "perkiraan dipanggil pukul", survey: "Isi survei kepuasan", live: "diperbarui langsung",
       offline: "menyambung ulang…", noeta: "perkiraan waktu belum tersedia"},
  en: {waiting: "Waiting", called: "Called! Please go to", serving: "Being served", completed: "Done",
       no_show: "No-show", transferred: "Transferred", cancelled: "Cancelled", ahead: "ahead of you",
       eta: "expected call at", survey: "Rate our service", live: "live",
       offline: "reconnecting…", noeta: "no time estimate yet"}
}[lang];
const token = DATA.token;
function draw(view) {
  const box = document.getElementById("tickets");
  box.replaceChildren();
  for (const t of view.tickets) {
    const card = document.createElement("div");
    card.className = "card"; card.dataset.ticket = t.ticket_id;
    const number = document.createElement("p"); number.className = "number"; number.textContent = t.number;
    const name = document.createElement("p"); name.textContent = t.service_name[lang];
    const state = document.createElement("p"); state.className = "state " + t.status; state.dataset.testid = "state";
    let text = T[t.status] || t.status;
    if (t.status === "called" && t.counter_name) text += " " + t.counter_name[lang];
    else if (t.status === "called" && t.counter) text += " " + t.counter;
    state.textContent = text;
    card.append(number, name, state);
    if (t.status === "waiting") {
      const more = document.createElement("p"); more.className = "muted"; more.dataset.testid = "eta";
      more.textContent = t.position !== null ? t.position + " " + T.ahead + (t.eta_local ? ", " + T.eta + " " + t.eta_local + " WIB" : "") : T.noeta;
      card.append(more);
    }
    if (t.survey_open) {
      const a = document.createElement("a"); a.className = "button"; a.id = "survey-" + t.ticket_id;
      a.href = "/survey/" + token + "/" + t.ticket_id + "?lang=" + lang; a.textContent = T.survey;
      card.append(a);
    }
    box.append(card);
  }
  const pending = document.getElementById("pending");
  if (pending) pending.hidden = view.pending_services.length === 0;
}
const live = document.getElementById("live");
const source = new EventSource("/api/v1/status/" + token + "/stream");
source.addEventListener("status", (e) => { draw(JSON.parse(e.data)); live.textContent = T.live; });
source.onerror = () => { live.textContent = T.offline; };
