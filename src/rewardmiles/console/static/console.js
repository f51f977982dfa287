/* rewardmiles console: the little every page shares. No inline scripts anywhere (the pages'
   Content-Security-Policy forbids them); page scripts register with `rewardmilesConsole.on`. */
(function () {
  "use strict";
  var starters = [];

  function on(start) { starters.push(start); }

  function startAll(root) {
    starters.forEach(function (start) { start(root); });
  }

  // [data-copy="#id"]: copies the text of the element named to the clipboard.
  on(function (root) {
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      if (button.dataset.ready) { return; }
      button.dataset.ready = "1";
      button.addEventListener("click", function () {
        var source = document.querySelector(button.dataset.copy);
        if (!source) { return; }
        var text = source.textContent.trim();
        var done = function () { button.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
        } else {
          selectText(source);
          document.execCommand("copy");
          done();
        }
      });
    });
  });

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // [data-select-all="name"]: a checkbox that checks or clears every checkbox of that name.
  on(function (root) {
    root.querySelectorAll("[data-select-all]").forEach(function (box) {
      if (box.dataset.ready) { return; }
      box.dataset.ready = "1";
      box.addEventListener("change", function () {
        var form = box.form || document;
        form.querySelectorAll('input[type="checkbox"][name="' + box.dataset.selectAll + '"]')
          .forEach(function (other) { other.checked = box.checked; });
      });
    });
  });

  // Content htmx swaps in is started like a fresh page.
  document.addEventListener("htmx:load", function (event) { startAll(event.target); });
  document.addEventListener("DOMContentLoaded", function () { startAll(document); });

  window.rewardmilesConsole = { on: on };
})();
