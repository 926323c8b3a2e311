// register.js: the script of register.html, served from /static/ (CSP: no inline script).
// Only the chosen session's slots are offered.
const session = document.getElementById("session_id"), slot = document.getElementById("appointment_at");
function filterSlots() {
  for (const o of slot.options) { if (o.dataset.session) o.hidden = o.dataset.session !== session.value; }
  if (slot.selectedOptions[0] && slot.selectedOptions[0].hidden) slot.value = "";
}
session.addEventListener("change", filterSlots); filterSlots();
// Proof of work (ADR 0122): after a few registrations from one address the server asks for a
// solved challenge. The page solves it in the background (WebCrypto SHA-256, in batches so the
// browser stays responsive) and holds a submit until the answer is there.
const form = document.getElementById("register");
const challenge = document.getElementById("challenge"), nonce = document.getElementById("nonce");
function zeroBits(bytes) {
  let bits = 0;
  for (const b of bytes) {
    if (b === 0) { bits += 8; continue; }
    return bits + Math.clz32(b) - 24;
  }
  return bits;
}
async function solve(text) {
  const want = Number(text.split(".")[1]), enc = new TextEncoder();
  for (let start = 0; ; start += 2048) {
    const tries = [];
    for (let n = start; n < start + 2048; n++) {
      tries.push(crypto.subtle.digest("SHA-256", enc.encode(text + ":" + n)).then((d) => [n, d]));
    }
    for (const [n, d] of await Promise.all(tries)) {
      if (zeroBits(new Uint8Array(d)) >= want) return String(n);
    }
  }
}
const solved = challenge && challenge.value && window.crypto && crypto.subtle
  ? solve(challenge.value).then((n) => { nonce.value = n; }) : Promise.resolve();
let sending = false;
form.addEventListener("submit", (e) => {
  if (nonce.value || sending || !challenge.value) return;
  e.preventDefault(); sending = true;
  solved.then(() => form.submit());
});
