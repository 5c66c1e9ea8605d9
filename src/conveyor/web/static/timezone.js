// A new connector's time zone starts as the browser's own (an IANA name such as
// "Europe/Paris"), when Conveyor knows that zone; the server's default (UTC) stays
// otherwise. Kept in a file: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      return "";
    }
  }

  function apply() {
    var input = document.getElementById("f-timezone");
    if (!input || !input.hasAttribute("data-browser-timezone")) return;
    input.removeAttribute("data-browser-timezone");
    var zone = browserZone();
    var list = input.list;
    if (!zone || zone === input.value || !list) return;
    var known = Array.prototype.some.call(list.options, function (o) {
      return o.value === zone;
    });
    if (!known) return;
    input.value = zone;
    // The schedule preview (htmx, on change) shows the runs in the new zone.
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // The change event must reach htmx's listener on the schedule fieldset, which htmx adds
  // when it processes the page at DOMContentLoaded. A deferred script runs before that
  // (readyState "interactive"), so wait for it; the timeout lets htmx's own handler go first.
  if (document.readyState === "complete") {
    apply();
  } else {
    document.addEventListener("DOMContentLoaded", function () {
      setTimeout(apply, 0);
    });
  }
})();
