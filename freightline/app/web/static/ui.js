// Live pipeline: the server sends the pipeline's HTML (already escaped) when it changes.
"use strict";
(function () {
  const section = document.getElementById("pipeline");
  const badge = document.getElementById("live");
  if (!section || !window.EventSource) return;
  const source = new EventSource(section.dataset.events);
  source.addEventListener("pipeline", function (event) {
    section.innerHTML = JSON.parse(event.data).html;
    section.dataset.updates = String(Number(section.dataset.updates || 0) + 1);
  });
  source.addEventListener("trouble", function (event) {
    if (badge) { badge.className = "live off"; badge.title = JSON.parse(event.data).message; }
  });
  source.onopen = function () { if (badge) { badge.className = "live on"; badge.title = "live"; } };
  source.onerror = function () { if (badge) { badge.className = "live off"; badge.title = "reconnecting"; } };
})();
