// rollguard status page: re-fetch this page every few seconds while the deployment runs
// and swap in its <main>. The server escapes everything; the parsed document is inert.
(function () {
  "use strict";
  var body = document.body;
  function every() { return parseInt(body.getAttribute("data-refresh") || "0", 10); }
  function tick() {
    fetch(location.pathname + location.search, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.text(); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var next = doc.querySelector("main");
        var open = {};
        document.querySelectorAll("details[open]").forEach(function (d, i) { open[i] = true; });
        if (next) { document.querySelector("main").replaceWith(document.adoptNode(next)); }
        document.querySelectorAll("details").forEach(function (d, i) { if (open[i]) { d.open = true; } });
        body.setAttribute("data-refresh", doc.body.getAttribute("data-refresh") || "0");
        schedule(1);
      })
      .catch(function () { schedule(3); });
  }
  function schedule(slower) {
    var s = every();
    if (s > 0) { setTimeout(tick, s * 1000 * slower); }
  }
  schedule(1);
})();
