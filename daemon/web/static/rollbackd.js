// rollbackd incident pages: small enhancements only; every page works without this script.
// - a "Copy" button beside each incident id (the ids are full text, selectable, without it too)
// - the deadline on an incident page counts down
// - an incident page opens itself again when the incident changes (polling its version), unless
//   the responder has started typing into one of its forms
"use strict";

function addCopyButtons() {
  document.querySelectorAll("code.copy, a.id code").forEach(function (code) {
    if (!navigator.clipboard) { return; }
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy-button";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy incident id " + code.textContent);
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(code.textContent).then(function () { button.textContent = "Copied"; });
    });
    var anchor = code.closest("a") || code;
    anchor.insertAdjacentElement("afterend", button);
  });
}

function startCountdowns() {
  var nodes = document.querySelectorAll(".countdown[data-due]");
  if (!nodes.length) { return; }
  function tick() {
    nodes.forEach(function (node) {
      var left = Math.round((Date.parse(node.dataset.due) - Date.now()) / 1000);
      if (isNaN(left)) { return; }
      if (left <= 0) { node.textContent = "(due now)"; return; }
      var m = Math.floor(left / 60), s = left % 60;
      node.textContent = "(in " + m + "m " + (s < 10 ? "0" : "") + s + "s)";
    });
  }
  tick();
  window.setInterval(tick, 1000);
}

function followChanges() {
  var live = document.getElementById("live");
  if (!live || !window.fetch) { return; }
  var typing = function () {
    return Array.prototype.some.call(document.querySelectorAll("input:not([type=hidden]), textarea"),
      function (field) { return field.value !== ""; });
  };
  window.setInterval(function () {
    fetch(live.dataset.url, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (now) {
        if (!now || now.updated_at === live.dataset.version) { return; }
        live.textContent = "This incident changed (now " + now.state + ").";
        // A GET of the page, never reload(): after a refused form the page is a POST's answer,
        // and reloading it would send the form (and its code) again.
        if (!typing()) { window.location.assign(live.dataset.page); }
      })
      .catch(function () { /* the daemon is restarting: try again at the next tick */ });
  }, 3000);
}

document.addEventListener("DOMContentLoaded", function () {
  addCopyButtons();
  startCountdowns();
  followChanges();
});
