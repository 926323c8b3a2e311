// board.js: the script of board.html, served from /static/ (CSP: no inline script).
"use strict";
const DATA = JSON.parse(document.getElementById("page-data").textContent);
const site = DATA.site;
const initialCalls = DATA.calls;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

// --- how it is said: the server writes the sentence (call.spoken, services/queue/announce.py) ---
// A browser with an Indonesian voice says it itself after a chime; any other (most TVs, headless
// browsers) plays the box's own recording of it (call.audio: chime + eSpeak NG, one WAV).
window.giliranAnnouncements = [];  // what was announced, how, with start and end (read by tests)
const pending = [];
let busy = false, voice = null, blocked = false;
function pickVoice() {
  if (!("speechSynthesis" in window)) return null;
  return speechSynthesis.getVoices().find((v) => v.lang && v.lang.toLowerCase().startsWith("id")) || null;
}
function showVoiceState() {
  voice = pickVoice();
  $("voice").textContent = voice
    ? `Suara: ${voice.name}`
    : "Suara: rekaman dari server (Bahasa Indonesia) / Voice: recorded by the server";
}
if ("speechSynthesis" in window) speechSynthesis.onvoiceschanged = showVoiceState;
showVoiceState();
function refused() {  // the browser wants a press before sound (not started as a paired board)
  blocked = true; $("sound").hidden = false;
}
let context = null;
function chime() {
  try {
    context = context || new AudioContext();
    const t = context.currentTime;
    [[659, 0], [523, 0.35]].forEach(([f, d]) => {
      const o = context.createOscillator(), g = context.createGain();
      o.frequency.value = f; o.connect(g); g.connect(context.destination);
      g.gain.setValueAtTime(0.3, t + d); g.gain.exponentialRampToValueAtTime(0.001, t + d + 0.6);
      o.start(t + d); o.stop(t + d + 0.6);
    });
  } catch (e) { /* no audio device: the flash still shows the call */ }
  return new Promise((r) => setTimeout(r, 900));
}
function speak(text, entry) {
  return new Promise((resolve) => {
    const u = new SpeechSynthesisUtterance(text);
    u.voice = voice; u.lang = voice.lang; u.rate = 0.9;
    const done = (how) => { entry.how = entry.how || how; resolve(); };
    u.onend = () => done("ended");
    u.onerror = (e) => { if (e.error === "not-allowed") refused(); done("error"); };
    setTimeout(() => done("timeout"), 15000);  // a stuck engine must not stop every later call
    speechSynthesis.speak(u);
  });
}
function play(url, entry) {
  return new Promise((resolve) => {
    const player = new Audio(url);
    let guard = null;
    const done = (how) => {
      if (entry.how) return;
      entry.how = how; clearTimeout(guard); resolve();
    };
    // A stuck device must not stop every later call: give up a little after the clip's length.
    guard = setTimeout(() => done("timeout"), 20000);
    player.addEventListener("loadedmetadata", () => {
      entry.duration = player.duration;
      clearTimeout(guard); guard = setTimeout(() => done("timeout"), (player.duration + 5) * 1000);
    });
    player.addEventListener("ended", () => { entry.played = player.currentTime; done("ended"); });
    player.addEventListener("error", () => done("error"));
    player.play().catch((e) => { if (e.name === "NotAllowedError") refused(); done("refused"); });
  });
}
const shown = () => new Promise((r) => setTimeout(r, 2500));  // long enough to read
async function announce(call, entry) {
  if (blocked) { entry.how = "silent"; return shown(); }
  if (voice) { entry.mode = "voice"; await chime(); return speak(call.spoken, entry); }
  entry.mode = "server"; entry.audio = call.audio;
  await play(call.audio, entry);
  if (entry.how !== "ended") return shown();
}
async function drain() {
  if (busy) return;
  busy = true;
  while (pending.length) {
    const call = pending.shift();
    const entry = {call_id: call.call_id, number: call.number, text: call.spoken, mode: null,
                   how: null, started: performance.now(), ended: null};
    window.giliranAnnouncements.push(entry);
    $("now-number").textContent = call.number;
    $("now-counter").textContent = call.counter_name;
    $("now").classList.remove("flash"); void $("now").offsetWidth; $("now").classList.add("flash");
    await announce(call, entry);
    entry.ended = performance.now();
  }
  busy = false;
}
$("sound").onclick = () => {  // a press is the browser's permission to sound from now on
  blocked = false; $("sound").hidden = true; showVoiceState(); chime();
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
