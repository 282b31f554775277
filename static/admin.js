// Admin live view: polls /admin/live.json every second and redraws the tiles and
// a 15-minute chart (plain SVG, no library). Fetches only the samples it lacks.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var form = document.getElementById("release-form");
  if (form) {
    form.addEventListener("submit", function () {
      // datetime-local has no zone: tell the server this browser's offset.
      form.elements.tz_offset.value = String(new Date().getTimezoneOffset());
    });
  }
  document.querySelectorAll("time[data-ms]").forEach(function (t) {
    t.textContent = new Date(+t.dataset.ms).toLocaleString();
  });
  document.querySelectorAll("time[data-s]").forEach(function (t) {
    t.textContent = new Date(1000 * +t.dataset.s).toLocaleString();
  });
  if (!live) return;

  var series = [], last = 0, svg = document.getElementById("chart");
  // Colours dark enough for 4.5:1 as text on the chart and in the legend (WCAG AA).
  var LINES = [
    ["waiting", "#1a56db"], ["admitted_per_s", "#047857"], ["admitting", "#4b5563", "4 3"],
    ["arrivals_per_s", "#b45309"], ["p95_ms", "#c81e1e"]
  ];
  // Samples come once a second; a longer silence (no pacer, Redis away) is a gap,
  // and a line drawn across it would show numbers nobody measured.
  var GAP_S = 3;

  // What the pacer admitted at for a sample: the governed target, no-shows made up
  // (samples say so themselves since the auto rate; older ones are worked out).
  function admitting(p) {
    if (p.admission_rate) return p.admission_rate;
    if (p.target_rate === null || p.target_rate === undefined) return null;
    var target = p.effective_rate === null || p.effective_rate === undefined
      ? p.target_rate : Math.min(p.target_rate, p.effective_rate);
    return target * Math.min(Math.max(p.noshow_factor || 1, 1), 2);
  }
  function value(p, key) {
    var v = key === "admitting" ? admitting(p) : p[key];
    return v === null || v === undefined ? null : v;
  }

  function fmt(x, digits) {
    if (x === null || x === undefined) return "–";
    return typeof x === "number" ? x.toLocaleString(undefined, { maximumFractionDigits: digits || 1 }) : x;
  }
  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function set(key, text) {
    live.querySelectorAll('[data-k="' + key + '"]').forEach(function (el) { el.textContent = text; });
  }

  function draw() {
    var w = 600, h = 180, span = 900, now = Date.now() / 1000;
    var parts = [];
    LINES.forEach(function (line, i) {
      var key = line[0], max = 0;
      series.forEach(function (p) { var v = value(p, key); if (v > max) max = v; });
      if (key === "admitting") {  // share the admitted line's scale
        series.forEach(function (p) { if (p.admitted_per_s > max) max = p.admitted_per_s; });
      }
      if (!(max > 0)) max = 1;
      // One polyline per run of samples without a gap or a missing value.
      var runs = [], run = [], prev = null;
      series.forEach(function (p) {
        var v = value(p, key);
        if (v === null || (prev !== null && p.t - prev > GAP_S)) {
          if (run.length) runs.push(run);
          run = [];
        }
        prev = p.t;
        if (v === null) return;
        var x = w - (now - p.t) / span * w, y = h - 4 - (v / max) * (h - 24);
        run.push([x, y]);
      });
      if (run.length) runs.push(run);
      var dash = line[2] ? '" stroke-dasharray="' + line[2] : "";
      runs.forEach(function (r) {
        if (r.length === 1) {  // a lone sample: a dot, since a line needs two
          parts.push('<circle data-line="' + key + '" cx="' + r[0][0].toFixed(1) + '" cy="' + r[0][1].toFixed(1) + '" r="1.5" fill="' + line[1] + '"/>');
          return;
        }
        var pts = r.map(function (xy) { return xy[0].toFixed(1) + "," + xy[1].toFixed(1); });
        parts.push('<polyline data-line="' + key + '" fill="none" stroke="' + line[1] + dash + '" stroke-width="1.5" points="' + pts.join(" ") + '"/>');
      });
      if (runs.length) {
        parts.push('<text x="4" y="' + (12 + 11 * i) + '" fill="' + line[1] + '" font-size="10">max ' + fmt(max, 3) + "</text>");
      }
    });
    svg.innerHTML = parts.join("");
  }

  function update(j) {
    ["waiting", "max_active", "active", "last_position", "frontier"].forEach(function (k) { set(k, fmt(j[k], 2)); });
    set("rate", fmt(j.rate, 3));
    set("admitted_per_s", fmt(j.admitted_per_s, 2));
    set("admission_rate", fmt(j.admission_rate, 3));
    set("target_rate", fmt(j.target_rate, 3));
    set("noshow_factor", fmt(j.noshow_factor, 3));
    set("governor_reason", j.governor_reason || "");
    set("rate_mode", j.rate_mode || "–");
    live.classList.toggle("paused", !!j.paused);
    live.querySelectorAll("[data-held]").forEach(function (el) { el.textContent = j.paused ? "paused" : ""; });
    set("arrivals_per_s", fmt(j.arrivals_per_s, 2));
    set("drain", j.held ? "held" : duration(j.drain_s));
    set("p50_ms", fmt(j.p50_ms));
    set("p95_ms", fmt(j.p95_ms));
    set("error_rate", j.error_rate === null || j.error_rate === undefined ? "–" : (100 * j.error_rate).toFixed(1) + " %");
    document.getElementById("mode-badge").textContent = (j.mode || "–") + (j.paused ? " · paused" : "") + (j.redis ? "" : " · redis unreachable");
    document.getElementById("live-age").textContent = "updated " + new Date(1000 * j.now).toLocaleTimeString();
    (j.series || []).forEach(function (p) { series.push(p); last = Math.max(last, p.t); });
    var cutoff = Date.now() / 1000 - 900;
    while (series.length && series[0].t < cutoff) series.shift();
    draw();
  }

  function poll() {
    fetch("/admin/live.json?since=" + last, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { location.href = "/admin/login"; throw r; }
        if (!r.ok) throw r;
        return r.json();
      })
      .then(function (j) { update(j); setTimeout(poll, 1000); })
      .catch(function () {
        document.getElementById("live-age").textContent = "connection lost, retrying…";
        setTimeout(poll, 3000);
      });
  }
  poll();
})();
