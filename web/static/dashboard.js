// Charts and the live strip of the dashboard pages. Data comes from the JSON API of the same origin (the
// page's own filters, passed through location.search); every text from the data is set with textContent or
// handed to Chart.js as data, never as HTML. When all charts are drawn, <body data-charts="ready">.
(function () {
  "use strict";
  var body = document.body;
  var page = body.getAttribute("data-page");

  // Error-category colours (kept in step with the .cat-* classes of app.css).
  var CATEGORY = {
    network: "#3b82f6", storage: "#8b5cf6", resource: "#f97316", timeout: "#eab308", config: "#14b8a6",
    service: "#06b6d4", permission: "#ec4899", apt: "#ef4444", proxmox: "#e11d48", user_aborted: "#94a3b8",
    command_not_found: "#a855f7", signal: "#f59e0b", build: "#84cc16", dependency: "#10b981",
    database: "#0ea5e9", runtime: "#d946ef", shell: "#78716c", preflight: "#be185d", unknown: "#64748b"
  };
  var PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
    "#ea580c", "#4f46e5", "#0d9488", "#a16207", "#be123c", "#475569", "#9333ea"];

  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  function apiUrl() {
    var search = window.location.search || "";
    if (page === "dashboard") { return "/api/v2/dashboard" + search; }
    if (page === "errors") { return "/api/v2/errors" + search; }
    if (page === "app") {
      var el = document.querySelector("[data-app]");
      if (!el) { return null; }
      return "/api/v2/apps/" + encodeURIComponent(el.getAttribute("data-app")) + search;
    }
    return null;
  }

  function names(list) { return list.map(function (c) { return c.name; }); }
  function counts(list) { return list.map(function (c) { return c.count; }); }

  function spec(key, d) {
    var ok = css("--ok") || "#16a34a", bad = css("--bad") || "#dc2626", warn = css("--warn") || "#f59e0b";
    switch (key) {
      case "daily": return {
        type: "bar",
        data: { labels: d.daily_stats.map(function (s) { return s.date; }), datasets: [
          { label: "success", data: d.daily_stats.map(function (s) { return s.success; }), backgroundColor: ok, stack: "s" },
          { label: "failed", data: d.daily_stats.map(function (s) { return s.failed; }), backgroundColor: bad, stack: "s" },
          { label: "aborted", data: d.daily_stats.map(function (s) { return s.aborted; }), backgroundColor: warn, stack: "s" }
        ] },
        options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } }
      };
      case "top_apps": return { type: "bar", data: { labels: names(d.top_apps), datasets: [
        { label: "installs", data: counts(d.top_apps), backgroundColor: PALETTE[0] }] },
        options: { indexAxis: "y", plugins: { legend: { display: false } } } };
      case "pve_versions":
      case "duration_buckets": return { type: "bar", data: { labels: names(d[key]), datasets: [
        { label: "installs", data: counts(d[key]), backgroundColor: PALETTE[4] }] },
        options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } } };
      case "os_distribution": case "type_stats": case "method_stats": case "cpu_vendors": case "gpu_vendors":
        return { type: "doughnut", data: { labels: names(d[key]), datasets: [
          { data: counts(d[key]), backgroundColor: PALETTE }] } };
      case "error_categories": return { type: "doughnut", data: { labels: names(d.error_categories), datasets: [
        { data: counts(d.error_categories), backgroundColor: d.error_categories.map(function (c) {
          return CATEGORY[c.name] || CATEGORY.unknown; }) }] } };
      case "exit_codes": return { type: "bar", data: { labels: d.exit_codes.map(function (x) { return String(x.code); }),
        datasets: [{ label: "installs", data: d.exit_codes.map(function (x) { return x.count; }),
          backgroundColor: d.exit_codes.map(function (x) { return CATEGORY[x.category] || CATEGORY.unknown; }) }] },
        options: { plugins: { legend: { display: false }, tooltip: { callbacks: { afterLabel: function (ctx) {
          return d.exit_codes[ctx.dataIndex].description; } } } } } };
      case "resources": return { type: "line", data: { labels: d.resource_trends.map(function (t) { return t.date; }), datasets: [
        { label: "cores", data: d.resource_trends.map(function (t) { return t.avg_cores; }), borderColor: PALETTE[0], yAxisID: "y" },
        { label: "RAM GB", data: d.resource_trends.map(function (t) { return t.avg_ram_mb === null ? null : t.avg_ram_mb / 1024; }), borderColor: PALETTE[1], yAxisID: "y" },
        { label: "disk GB", data: d.resource_trends.map(function (t) { return t.avg_disk_gb; }), borderColor: PALETTE[2], yAxisID: "y1" },
        { label: "duration s", data: d.resource_trends.map(function (t) { return t.avg_duration_secs; }), borderColor: PALETTE[3], yAxisID: "y1" }
      ] }, options: { scales: { y: { beginAtZero: true, position: "left" }, y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } } } } };
      default: return null;
    }
  }

  var charts = [];
  function draw(d) {
    if (typeof window.Chart !== "function") { body.setAttribute("data-charts", "unavailable"); return; }
    var text = css("--fg") || "#111", grid = css("--grid") || "#ddd";
    window.Chart.defaults.color = text;
    window.Chart.defaults.borderColor = grid;
    window.Chart.defaults.animation = false;
    window.Chart.defaults.maintainAspectRatio = false;
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var canvases = document.querySelectorAll("canvas[data-chart]");
    for (var i = 0; i < canvases.length; i++) {
      var s = spec(canvases[i].getAttribute("data-chart"), d);
      if (s) { charts.push(new window.Chart(canvases[i], s)); }
    }
    body.setAttribute("data-charts", "ready");
    body.setAttribute("data-charts-count", String(charts.length));
    // Milliseconds from navigation start to charts drawn (read by deploy/bench/web.sh).
    body.setAttribute("data-charts-ms", String(Math.round(window.performance.now())));
  }

  var data = null;
  var url = apiUrl();
  if (url && document.querySelector("canvas[data-chart]")) {
    body.setAttribute("data-charts", "loading");
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (d) { data = d; draw(d); })
      .catch(function (e) { body.setAttribute("data-charts", "error"); body.setAttribute("data-charts-error", String(e)); });
  }
  document.addEventListener("themechange", function () { if (data) { draw(data); } });

  // Live strip: the last hour from the aggregator, refreshed every 10 s.
  var live = document.getElementById("live");
  function setLive(name, value) {
    var el = live.querySelector("[data-live='" + name + "']");
    if (el) { el.textContent = value; }
  }
  function poll() {
    fetch("/api/live?repo=" + encodeURIComponent(live.getAttribute("data-repo") || "all"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (l) {
        if (!l || !l.available) { return; }
        ["started", "in_progress", "success", "failed", "aborted"].forEach(function (k) { setLive(k, String(l[k])); });
        setLive("failure_rate", l.failure_rate === null ? "–" : l.failure_rate + "%");
        live.setAttribute("data-updated", l.generated_at || "");
      })
      .catch(function () { /* keep the last figures */ });
  }
  if (live) { window.setInterval(poll, 10000); }

  // Sparklines of the signature trends: bar heights from data- attributes (no inline style in markup).
  var bars = document.querySelectorAll(".spark .bar");
  for (var j = 0; j < bars.length; j++) {
    var n = Number(bars[j].getAttribute("data-n")) || 0, max = Number(bars[j].getAttribute("data-max")) || 1;
    bars[j].style.height = Math.max(1, Math.round(20 * n / max)) + "px";
  }
})();
