// ticket.js: the printed ticket's print button and the kiosk's automatic print (CSP: no inline script).
"use strict";
const button = document.getElementById("print");
if (button) {
  button.addEventListener("click", () => window.print());
  // A kiosk prints at once; a browser driven by tests (webdriver) never opens the dialog.
  if (button.dataset.autoprint === "1" && !navigator.webdriver) window.print();
}
