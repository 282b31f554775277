// Progress page: keeps the numbers current without reloading, and asks the gateway
// only when this student's turn is near. Far from the front it reads the public
// queue state, which a CDN can serve to the whole crowd from one cached copy.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var form = document.querySelector("form[data-autosubmit]");
  if (form) {
    setTimeout(function () { form.submit(); }, 1000 * (+form.dataset.autosubmit || 5));
  }
  if (!main || !main.dataset.position) return;
  var d = main.dataset, position = +d.position, joined = +d.joined;
  var $ = function (id) { return document.getElementById(id); };

  function range(lo, hi) {
    if (hi < 60) return d.etaUnder;
    return d.etaMinutes.replace("{low}", Math.floor(lo / 60)).replace("{high}", Math.ceil(hi / 60));
  }
  function eta(ahead, rate, paused) {
    if (paused || !(rate > 0)) return d.etaPaused;
    var s = (ahead + 1) / rate;
    return range(s * 0.9, s * 1.2);
  }

  function show(ahead, etaText, flags) {
    $("ahead").textContent = ahead;
    $("eta").textContent = etaText;
    var span = Math.max(1, position - joined);
    $("bar").value = Math.min(span, Math.max(0, span - ahead - 1));
    $("reconnecting").hidden = !flags.reconnecting;
    $("paused").hidden = !flags.paused;
    var now = new Date();
    $("updated").textContent = now.toLocaleTimeString();
    $("updated").setAttribute("datetime", now.toISOString());
  }

  function next(seconds) {
    // Jitter keeps a crowd that loaded the page together from polling together.
    setTimeout(poll, 1000 * Math.max(1, seconds) * (0.8 + 0.4 * Math.random()));
  }

  function near(ahead, rate) { return ahead / Math.max(rate, 0.001) < 30 || ahead < 20; }

  var lastRate = 1, lastAhead = position;
  function poll() {
    var url = near(lastAhead, lastRate) ? "/status" : "/queue/state";
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok && r.status !== 202) throw r;
        return r.json();
      })
      .then(function (j) {
        if (url === "/status") {
          if (j.state === "ready" || j.state === "admitted") {
            $("ready").hidden = false;
            location.reload();
            return;
          }
          if (j.state !== "waiting") { next(j.retry_after_s || 5); return; }
          lastAhead = j.ahead;
          show(j.ahead, j.eta_range_s ? range(j.eta_range_s[0], j.eta_range_s[1]) : d.etaPaused, j);
          next(j.retry_after_s);
        } else {
          if (typeof j.frontier !== "number") throw j;
          // Another line (Redis came back empty): the server will explain and re-place.
          if (j.epoch !== d.epoch) { location.reload(); return; }
          lastRate = j.rate;
          lastAhead = Math.max(0, position - j.frontier - 1);
          if (position <= j.frontier) { location.reload(); return; }
          show(lastAhead, eta(lastAhead, j.rate, j.paused), { paused: j.paused, reconnecting: j.stale });
          next(Math.min(60, Math.max(2, lastAhead / Math.max(j.rate, 0.001) / 4)));
        }
      })
      .catch(function () {
        // Never a tight loop: an error answer waits as long as an outage would.
        $("reconnecting").hidden = false;
        next(10);
      });
  }
  next(+d.retry || 5);
})();
