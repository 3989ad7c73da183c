// Steward dashboard: the only script. Keyboard shortcuts and small conveniences; every page
// works without it. Served from /ui/static/app.js under a CSP that allows only this file.
(function () {
  "use strict";
  var go = { o: "/ui/", c: "/ui/checks", a: "/ui/alerts", s: "/ui/secrets", b: "/ui/backups", l: "/ui/audit" };
  var pendingG = false;
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
    if (e.key === "/") {
      var f = document.querySelector("[data-filter]");
      if (f) { e.preventDefault(); f.focus(); }
      return;
    }
    if (e.key === "?") {
      var h = document.getElementById("shortcuts");
      if (h) { h.open = !h.open; if (h.open) h.querySelector("summary").focus(); }
      return;
    }
    if (pendingG && go[e.key]) { window.location.href = go[e.key]; }
    pendingG = e.key === "g";
  });
  // Forms that change something ask first when they carry data-confirm.
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
  // A revealed secret hides itself again after 60 seconds.
  var v = document.querySelector("[data-reveal-expires]");
  if (v) {
    setTimeout(function () {
      v.textContent = "(hidden again after 60 seconds; reveal it again if you still need it)";
    }, 60000);
  }
})();
