// Auto-refresh of the dashboard's figures: every data-refresh-secs seconds (0: never) the cards and the
// all-time count are read again from the JSON at data-source (same origin) and set with textContent.
// <body data-figures-refreshed="N"> counts the refreshes that arrived.
(function () {
  "use strict";
  var section = document.getElementById("figures");
  if (!section) { return; }
  var secs = Number(section.getAttribute("data-refresh-secs")) || 0;
  var source = section.getAttribute("data-source");
  if (secs <= 0 || !source) { return; }
  var refreshed = 0;
  function set(name, text) {
    var els = document.querySelectorAll("[data-figure='" + name + "']");
    for (var i = 0; i < els.length; i++) { els[i].textContent = text; }
  }
  function refresh() {
    fetch(source, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (f) {
        if (!f) { return; }
        set("total_installs", String(f.total_installs));
        set("success_rate", f.success_rate + "%");
        set("success_count", f.success_count + " succeeded");
        set("failed_count", String(f.failed_count));
        set("aborted_count", String(f.aborted_count));
        set("installing_count", String(f.installing_count));
        set("total_all_time", String(f.total_all_time));
        refreshed += 1;
        document.body.setAttribute("data-figures-refreshed", String(refreshed));
      })
      .catch(function () { /* keep the figures shown */ });
  }
  window.setInterval(refresh, secs * 1000);
})();
