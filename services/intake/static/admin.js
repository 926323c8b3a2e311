// admin.js: the admin page's site switch and confirmations (CSP: no inline script).
"use strict";
const siteSelect = document.getElementById("site-select");
if (siteSelect) siteSelect.addEventListener("change", () => siteSelect.form.submit());
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (e) => { if (!confirm(form.dataset.confirm)) e.preventDefault(); });
}
