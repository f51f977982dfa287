/* Pending review: the bulk form's answers. A refusal of the form (400, 409) comes back as the
   list fragment and is shown like a success; any other refusal (a page: 403, 413...) is shown
   in the list's alert with the page's own message. */
(function () {
  "use strict";

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    var target = detail.target;
    if (!target || target.id !== "pending-list" || !detail.isError) { return; }
    var text = detail.xhr.responseText || "";
    var page = new DOMParser().parseFromString(text, "text/html");
    if (page.getElementById("pending-list") && page.querySelector("title") === null) {
      detail.shouldSwap = true;
      detail.isError = false;
      return;
    }
    var alert = document.getElementById("bulk-refused");
    if (!alert) { return; }
    var said = page.querySelector("main .error");
    alert.textContent = (said ? said.textContent.trim() + " " : "") +
      "(HTTP " + detail.xhr.status + ")";
    alert.hidden = false;
  });

  // After the list comes back, the keyboard continues from what was done (or refused).
  document.addEventListener("htmx:afterSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "pending-list") { return; }
    var said = document.querySelector("#pending-list [data-outcome]");
    if (said) { said.focus(); }
  });

  window.rewardmilesConsole.on(function (root) {
    var form = root.querySelector ? root.querySelector("#bulk") : null;
    if (!form || form.dataset.ready) { return; }
    form.dataset.ready = "1";
    // The action buttons say how many lines they act on.
    var count = function () {
      return form.querySelectorAll('input[type="checkbox"][name="line"]:checked').length;
    };
    var buttons = form.querySelectorAll('button[name="action"]');
    var label = function () {
      var n = count();
      buttons.forEach(function (button) {
        var verb = button.value === "approve" ? "Approve" : "Reject";
        button.textContent = verb + " selected" + (n ? " (" + n + ")" : "");
      });
    };
    form.addEventListener("change", label);
    label();
  });
})();
