// register.js: the script of register.html, served from /static/ (CSP: no inline script).
// Only the chosen session's slots are offered.
const session = document.getElementById("session_id"), slot = document.getElementById("appointment_at");
function filterSlots() {
  for (const o of slot.options) { if (o.dataset.session) o.hidden = o.dataset.session !== session.value; }
  if (slot.selectedOptions[0] && slot.selectedOptions[0].hidden) slot.value = "";
}
session.addEventListener("change", filterSlots); filterSlots();
