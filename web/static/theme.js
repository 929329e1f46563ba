// Theme: follows prefers-color-scheme unless the visitor picked one with the toggle (kept in localStorage).
// Loaded in <head> so the chosen theme applies before the first paint. Without JS the toggle stays hidden
// and the system preference applies through CSS alone.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = null;
  try { saved = window.localStorage.getItem("theme"); } catch (e) { saved = null; }
  if (saved === "light" || saved === "dark") { root.setAttribute("data-theme", saved); }
  function current() {
    var set = root.getAttribute("data-theme");
    if (set) { return set; }
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme-toggle");
    if (!button) { return; }
    button.hidden = false;
    button.textContent = current() === "dark" ? "Light theme" : "Dark theme";
    button.addEventListener("click", function () {
      var next = current() === "dark" ? "light" : "dark";
      root.setAttribute("data-theme", next);
      try { window.localStorage.setItem("theme", next); } catch (e) { /* private mode */ }
      button.textContent = next === "dark" ? "Light theme" : "Dark theme";
      document.dispatchEvent(new CustomEvent("themechange"));
    });
  });
})();
