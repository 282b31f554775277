// The lookup's pages: a file, not inline handlers, because the gateway's CSP
// (script-src 'self') blocks inline script; the print button stays hidden without it.
(function () {
  "use strict";
  var buttons = document.querySelectorAll("button[data-print]");
  for (var i = 0; i < buttons.length; i++) {
    buttons[i].addEventListener("click", function () { window.print(); });
    buttons[i].hidden = false;
  }
})();
