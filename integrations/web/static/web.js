// signoff's web page: countdowns to deadlines, and keeping a live part of the page current by polling
// its fragment URL. The pages work without this script; it only saves reloading.
(function () {
  "use strict";
  var POLL_MS = 3000;

  function left(deadline) {
    var seconds = Math.floor((Date.parse(deadline) - Date.now()) / 1000);
    if (!(seconds > 0)) return "deadline passed";
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return h + " h " + m + " min left";
    if (m) return m + " min " + s + " s left";
    return s + " s left";
  }

  function tick() {
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var text = left(el.getAttribute("data-deadline"));
      if (el.textContent !== text) el.textContent = text;
    });
  }

  function notice(live, text) {
    var note = document.getElementById("live-notice");
    if (!note) {
      note = document.createElement("p");
      note.id = "live-notice";
      note.className = "notice";
      note.setAttribute("role", "status");
      live.parentNode.insertBefore(note, live);
    }
    note.textContent = text;
  }

  function settledWhileOpen(live) {
    // The request was decided elsewhere while this page was open: its forms no longer apply.
    var state = live.querySelector("[data-status]");
    var decide = document.getElementById("decide");
    if (!state || !decide || live.getAttribute("data-status") !== "pending") return;
    if (state.getAttribute("data-status") !== "pending") {
      decide.hidden = true;
      notice(live, "This request was " + state.getAttribute("data-status") + " while you were looking.");
      live.setAttribute("data-status", state.getAttribute("data-status"));
    }
  }

  function poll(live) {
    var url = live.getAttribute("data-live-url");
    var last = live.innerHTML.replace(/(<time[^>]*>)[^<]*/g, "$1");
    function again() { window.setTimeout(step, POLL_MS); }
    function step() {
      if (document.hidden) return again();
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.status === 401) {
            notice(live, "Your session has ended. Sign in again to keep this page current.");
            return null;
          }
          return response.ok ? response.text() : (again(), null);
        })
        .then(function (html) {
          if (html === null) return;
          // Countdown texts change every second; only a change in what they count down counts.
          var key = html.replace(/(<time[^>]*>)[^<]*/g, "$1");
          if (key !== last && !live.contains(document.activeElement)) {
            last = key;
            live.innerHTML = html;  // server-rendered and escaped by the template
            tick();
            settledWhileOpen(live);
          }
          again();
        })
        .catch(again);
    }
    again();
  }

  function checkJson(field) {
    // The edited arguments must be a JSON object; say what is wrong next to the field, before anything is sent.
    var message = document.getElementById(field.getAttribute("aria-describedby"));
    var problem = "";
    try {
      var value = JSON.parse(field.value);
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        problem = "The arguments must be a JSON object, like {\"name\": \"value\"}.";
      }
    } catch (error) {
      problem = "Not valid JSON: " + error.message;
    }
    field.setCustomValidity(problem);
    field.setAttribute("aria-invalid", problem ? "true" : "false");
    if (message) message.textContent = problem;
    return !problem;
  }

  function watchJson(field) {
    field.addEventListener("input", function () { checkJson(field); });
    field.form.addEventListener("submit", function (event) {
      if (!checkJson(field)) {
        event.preventDefault();
        field.focus();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea[data-json]").forEach(watchJson);
    tick();
    window.setInterval(tick, 1000);
    document.querySelectorAll("[data-live-url]").forEach(poll);
  });
})();
