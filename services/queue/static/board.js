// board.js: the script of board.html, served from /static/ (CSP: no inline script).
"use strict";
const DATA = JSON.parse(document.getElementById("page-data").textContent);
const site = DATA.site;
const initialCalls = DATA.calls;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

// --- what is said: "Nomor antrian A nol nol lima, silakan ke loket dua" -------------------
const DIGITS = ["nol", "satu", "dua", "tiga", "empat", "lima", "enam", "tujuh", "delapan", "sembilan"];
function terbilang(n) {  // 0..999, for counter numbers
  if (n < 10) return DIGITS[n];
  if (n === 10) return "sepuluh";
  if (n === 11) return "sebelas";
  if (n < 20) return DIGITS[n - 10] + " belas";
  if (n < 100) return (n < 20 ? "" : DIGITS[Math.floor(n / 10)] + " puluh") + (n % 10 ? " " + DIGITS[n % 10] : "");
  const h = Math.floor(n / 100), rest = n % 100;
  return (h === 1 ? "seratus" : DIGITS[h] + " ratus") + (rest ? " " + terbilang(rest) : "");
}
function spokenNumber(number) {  // "A-005" -> "A nol nol lima": digit by digit, as printed
  const [prefix, digits] = number.split("-");
  return prefix.split("").join(" ") + " " + digits.split("").map((d) => DIGITS[+d]).join(" ");
}
function spokenCounter(name) {  // "Loket 2" -> "loket dua"; "Booth BPJS" stays as written
  return name.toLowerCase().replace(/\d+/g, (d) => terbilang(parseInt(d, 10)));
}
function sentence(call) {
  return `Nomor antrian ${spokenNumber(call.number)}, silakan ke ${spokenCounter(call.counter_name)}`;
}

// --- the announcement queue: one at a time, chime then voice, never overlapping -----------
window.giliranAnnouncements = [];  // what was announced, with start and end (read by tests)
const pending = [];
let busy = false, soundOn = false, voice = null;
function pickVoice() {
  if (!("speechSynthesis" in window)) return null;
  return speechSynthesis.getVoices().find((v) => v.lang && v.lang.toLowerCase().startsWith("id")) || null;
}
function showVoiceState() {
  voice = pickVoice();
  $("voice").textContent = voice
    ? `Suara: ${voice.name}`
    : "Suara Bahasa Indonesia tidak tersedia di perangkat ini: panggilan ditampilkan dan berbunyi saja. / No Indonesian voice on this device: calls are shown and chimed only.";
}
if ("speechSynthesis" in window) speechSynthesis.onvoiceschanged = showVoiceState;
showVoiceState();
let audio = null;
function chime() {
  if (!soundOn) return Promise.resolve();
  try {
    audio = audio || new AudioContext();
    const t = audio.currentTime;
    [[659, 0], [523, 0.35]].forEach(([f, d]) => {
      const o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = f; o.connect(g); g.connect(audio.destination);
      g.gain.setValueAtTime(0.3, t + d); g.gain.exponentialRampToValueAtTime(0.001, t + d + 0.6);
      o.start(t + d); o.stop(t + d + 0.6);
    });
  } catch (e) { /* no audio device: the flash still shows the call */ }
  return new Promise((r) => setTimeout(r, 900));
}
function speak(text) {
  return new Promise((resolve) => {
    if (!soundOn || !voice) { setTimeout(resolve, 2500); return; }  // shown long enough to read
    const u = new SpeechSynthesisUtterance(text);
    u.voice = voice; u.lang = voice.lang; u.rate = 0.9;
    const done = () => resolve();
    u.onend = done; u.onerror = done;
    setTimeout(done, 15000);  // a stuck engine must not stop every later call
    speechSynthesis.speak(u);
  });
}
async function drain() {
  if (busy) return;
  busy = true;
  while (pending.length) {
    const call = pending.shift();
    const entry = {call_id: call.call_id, number: call.number, text: sentence(call),
                   spoken: Boolean(soundOn && voice), started: performance.now(), ended: null};
    window.giliranAnnouncements.push(entry);
    $("now-number").textContent = call.number;
    $("now-counter").textContent = call.counter_name;
    $("now").classList.remove("flash"); void $("now").offsetWidth; $("now").classList.add("flash");
    await chime();
    await speak(entry.text);
    entry.ended = performance.now();
  }
  busy = false;
}
$("sound").onclick = () => {
  soundOn = true; $("sound").hidden = true; showVoiceState();
  if (voice) speak("Suara aktif");
};

// --- the board itself ------------------------------------------------------------------
const announced = new Set(initialCalls);  // calls made before this page opened are not re-said
function render(view) {
  const [latest, ...older] = view.calls;
  if (latest && !busy && !pending.length) {
    $("now-number").textContent = latest.number;
    $("now-counter").textContent = latest.counter_name;
  }
  $("calls").innerHTML = older.map((c) =>
    `<tr><td class="num">${esc(c.number)}</td><td>${esc(c.counter_name)}</td><td>${esc(c.service_name)}</td></tr>`).join("");
  $("counters").innerHTML = view.counters.map((c) =>
    `<tr class="${esc(c.status)}"><td>${esc(c.name)}${c.status === "paused" ? " (istirahat)" : ""}</td><td class="num">${esc(c.number || "–")}</td></tr>`).join("");
  $("lines").innerHTML = view.lines.filter((l) => l.waiting).map((l) =>
    `<tr><td>${esc(l.name)}</td><td>${l.waiting}</td><td class="num">${esc(l.next.join(", "))}</td></tr>`).join("");
  // Oldest first, so calls missed while disconnected are said in the order they were made.
  const fresh = view.calls.filter((c) => !announced.has(c.call_id)).reverse();
  fresh.forEach((c) => { announced.add(c.call_id); pending.push(c); });
  if (fresh.length) drain();
}
function connect() {
  const source = new EventSource(`/api/v1/sites/${encodeURIComponent(site)}/board/stream`);
  source.addEventListener("board", (e) => {
    render(JSON.parse(e.data));
    $("status").textContent = "tersambung / live";
  });
  // EventSource retries by itself; the next message after reconnecting carries every call.
  source.onerror = () => { $("status").textContent = "terputus, menyambung ulang… / reconnecting…"; };
}
function tick() {
  $("clock").textContent = new Date().toLocaleTimeString("id-ID", {timeZone: "Asia/Jakarta", hour: "2-digit", minute: "2-digit"}) + " WIB";
}
tick(); setInterval(tick, 10000);
connect();
