// Progress page: keeps the numbers current without reloading, and asks the gateway
// only when this student's turn is near. Far from the front it reads the public
// queue state, which a CDN can serve to the whole crowd from one cached copy.
// Before a scheduled release it counts down, then asks for the drawn place.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var form = document.querySelector("form[data-autosubmit]");
  if (form) {
    setTimeout(function () { form.submit(); }, 1000 * (+form.dataset.autosubmit || 5));
  }
  if (!main) return;
  var d = main.dataset, lang = document.documentElement.lang;
  var $ = function (id) { return document.getElementById(id); };

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok && r.status !== 202) throw r;
        return r.json();
      });
  }
  function banner(j) {
    var b = $("banner"), text = j.banner && (j.banner[lang] || j.banner.en);
    if (!b) return;
    b.textContent = text || "";
    b.hidden = !text;
  }
  function after(seconds, fn) {
    // Jitter keeps a crowd that loaded the page together from polling together.
    setTimeout(fn, 1000 * Math.max(1, seconds) * (0.8 + 0.4 * Math.random()));
  }

  // The server wrote times in its own zone; show them in the student's.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var when = Date.parse(t.getAttribute("datetime"));
    if (!isNaN(when)) t.textContent = new Date(when).toLocaleTimeString();
  });

  if (d.release) { prequeue(); return; }
  if (!d.position) return;
  var position = +d.position, joined = +d.joined;

  function range(lo, hi) {
    if (hi < 60) return d.etaUnder;
    // As the server writes it (waitroom/gateway/pages.py minutes): never "0-2 min".
    var low = Math.max(1, Math.floor(lo / 60));
    var high = Math.max(low + 1, Math.ceil(hi / 60));
    return d.etaMinutes.replace("{low}", low).replace("{high}", high);
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

  function near(ahead, rate) { return ahead / Math.max(rate, 0.001) < 30 || ahead < 20; }

  var lastRate = 1, lastAhead = position;
  function poll() {
    var url = near(lastAhead, lastRate) ? "/status" : "/queue/state";
    getJSON(url)
      .then(function (j) {
        if (url === "/status") {
          if (j.state === "ready" || j.state === "admitted") {
            $("ready").hidden = false;
            location.reload();
            return;
          }
          if (j.state !== "waiting") { after(j.retry_after_s || 5, poll); return; }
          lastAhead = j.ahead;
          show(j.ahead, j.eta_range_s ? range(j.eta_range_s[0], j.eta_range_s[1]) : d.etaPaused, j);
          after(j.retry_after_s, poll);
        } else {
          if (typeof j.frontier !== "number") throw j;
          // Another line (Redis came back empty): the server will explain and re-place.
          if (j.epoch !== d.epoch) { location.reload(); return; }
          banner(j);
          // A paused line reports rate 0: keep the last real rate for pacing polls,
          // and look again soon, so the page learns of the resume within seconds.
          if (j.rate > 0) lastRate = j.rate;
          lastAhead = Math.max(0, position - j.frontier - 1);
          if (position <= j.frontier) { location.reload(); return; }
          show(lastAhead, eta(lastAhead, j.rate, j.paused), { paused: j.paused, reconnecting: j.stale });
          var wait = lastAhead / Math.max(lastRate, 0.001) / 4;
          // At most a minute; less while the auto rate climbs (poll_max_s).
          after(j.paused ? 5 : Math.min(j.poll_max_s || 60, Math.max(2, wait)), poll);
        }
      })
      .catch(function () {
        // Never a tight loop: an error answer waits as long as an outage would.
        $("reconnecting").hidden = false;
        after(10, poll);
      });
  }
  after(+d.retry || 5, poll);

  // -- before a scheduled release ------------------------------------------------
  function prequeue() {
    var releaseAt = +d.release, timer = null, asked = false;
    function pad(n) { return (n < 10 ? "0" : "") + n; }
    function tick() {
      var left = Math.max(0, Math.round((releaseAt - Date.now()) / 1000));
      var h = Math.floor(left / 3600), m = Math.floor(left % 3600 / 60), s = left % 60;
      $("countdown").textContent = (h ? h + ":" + pad(m) : m) + ":" + pad(s);
      if (left === 0 && !asked) {
        asked = true;
        $("releasing").hidden = false;
        // Spread the whole pre-queue's first question over a few seconds.
        setTimeout(ask, 1000 + 4000 * Math.random());
      }
    }
    function ask() {
      getJSON("/status").then(function (j) {
        if (j.state === "prequeue") {
          releaseAt = j.release_at_ms || releaseAt;
          if (releaseAt - Date.now() > 2000) {  // the release was moved: count down again
            asked = false;
            $("releasing").hidden = true;
          } else {
            after(Math.min(j.retry_after_s || 5, 5), ask);
          }
          return;
        }
        location.reload();  // the server renders the drawn place
      }).catch(function () { $("reconnecting").hidden = false; after(10, ask); });
    }
    // The admin may move the release: re-read it (from the cacheable state) now and then.
    function watch() {
      getJSON("/queue/state").then(function (j) {
        banner(j);
        if (j.epoch !== d.epoch) { location.reload(); return; }
        if (j.release && j.release.at_ms && !j.release.prequeue_to) {
          releaseAt = j.release.at_ms;
          $("release-at").textContent = new Date(releaseAt).toLocaleTimeString();
        } else if (!asked) { asked = true; ask(); return; }
        $("reconnecting").hidden = !j.stale;
        after(Math.min(30, Math.max(2, (releaseAt - Date.now()) / 4000)), watch);
      }).catch(function () { after(15, watch); });
    }
    tick();
    timer = setInterval(tick, 1000);
    after(Math.min(30, Math.max(2, (releaseAt - Date.now()) / 4000)), watch);
    return timer;
  }
})();
