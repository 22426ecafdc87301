// The console's one script. Pages work without it; with it, a region marked
// data-refresh="SECONDS" (the fleet overview) refreshes itself while the tab is visible,
// by fetching the same page and swapping in that region.
(function () {
  "use strict";
  var region = document.querySelector("[data-refresh]");
  if (!region || !window.fetch || !window.DOMParser) return;
  var seconds = Math.max(5, parseInt(region.getAttribute("data-refresh"), 10) || 15);
  function refresh() {
    if (document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("not refreshed");
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
        if (fresh) region.replaceChildren.apply(region, Array.prototype.slice.call(fresh.childNodes));
      })
      .catch(function () { /* keep what is shown; the next tick tries again */ });
  }
  window.setInterval(refresh, seconds * 1000);
})();
