// Conveyor's page behaviour, kept out of the HTML: the Content-Security-Policy allows no
// inline script, no inline event handler and no eval (htmx runs with allowEval: false, so
// hx-trigger filters such as [expr] cannot be used; this file does their work).
(function () {
  "use strict";

  // Live regions poll, but not while focus is inside them: the swap would take the
  // focused switch or link away from under a keyboard user.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail && evt.detail.elt;
    if (
      elt instanceof Element &&
      elt.hasAttribute("data-poll-pause-on-focus") &&
      elt.contains(document.activeElement)
    ) {
      evt.preventDefault();
    }
  });

  // Read-only fields meant for copying (a new API token) select their text on focus.
  document.addEventListener("focusin", function (evt) {
    var target = evt.target;
    if (target instanceof HTMLInputElement && target.hasAttribute("data-select-on-focus")) {
      target.select();
    }
  });
})();
