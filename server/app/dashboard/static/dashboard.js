// Live regions: an element with data-live-src is replaced by that fragment every data-live-every seconds
// (never more often than every 2 s), only while the tab is visible, one request at a time. A fragment that
// carries data-live-done (a finished run) stops the polling; a 401 (the session ended) reloads the page,
// which leads to the login form. While focus is inside the region (someone typing a comment or pressing
// Approve) it is left alone, so an update never eats what is being typed.
"use strict";
(function () {
  const MIN_EVERY_S = 2;

  function follow(region) {
    const every = Math.max(MIN_EVERY_S, Number(region.dataset.liveEvery) || 5) * 1000;
    let busy = false;

    async function refresh() {
      if (busy || document.hidden || region.querySelector("[data-live-done]")) return;
      if (region.contains(document.activeElement)) return;
      busy = true;
      try {
        const reply = await fetch(region.dataset.liveSrc, {credentials: "same-origin", cache: "no-store",
                                                            headers: {"Accept": "text/html"}});
        if (reply.status === 401) { window.location.reload(); return; }
        if (reply.ok) {
          region.innerHTML = await reply.text();
          region.dataset.liveUpdated = String(Date.now());
        }
      } catch (error) {
        // offline for a moment: the next tick tries again
      } finally {
        busy = false;
      }
    }

    const timer = window.setInterval(() => {
      if (region.querySelector("[data-live-done]")) { window.clearInterval(timer); return; }
      refresh();
    }, every);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-live-src]").forEach(follow);
  });
})();
