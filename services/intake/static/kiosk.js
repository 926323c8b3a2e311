// kiosk.js: the script of kiosk.html, served from /static/ (CSP: no inline script).
// An on-screen keypad: the NIK needs no keyboard at a touch kiosk.
const nik = document.getElementById("nik");
document.getElementById("keypad").addEventListener("click", (e) => {
  const key = e.target.dataset.key;
  if (!key) return;
  if (key === "⌫") nik.value = nik.value.slice(0, -1);
  else if (key === "C") nik.value = "";
  else if (nik.value.length < 16) nik.value += key;
});
