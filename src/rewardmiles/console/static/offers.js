/* Offers: the rule editor. As the rule or the sample basket is typed (debounced), the form is
   sent to the console's validate and preview routes with the session's CSRF header; their
   HTML fragments replace the rule's check and the preview (a verdict is answered 200, its
   state in data-state: ok, empty or bad). */
(function () {
  "use strict";
  var DELAY_MS = 300;

  function start(form) {
    var rule = form.querySelector("#rule");
    var basket = form.querySelector("#basket");
    var check = document.getElementById("rule-check");
    var preview = document.getElementById("preview");
    var csrf = form.querySelector('input[name="csrf"]').value;
    var timer = null;
    var sent = 0;

    function post(url, body) {
      return fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/x-www-form-urlencoded",
          "X-CSRF-Token": csrf
        },
        body: body
      });
    }

    function fields() {
      var data = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (name !== "csrf") { data.append(name, value); }
      });
      return data;
    }

    // The fragments are the console's own HTML (every value escaped by its templates).
    function show(target, response) {
      var redirect = response.headers.get("HX-Redirect");
      if (redirect) { window.location.assign(redirect); return null; }
      return response.text().then(function (html) {
        target.innerHTML = html;
      });
    }

    function refresh() {
      var mine = ++sent;
      var data = fields();
      form.setAttribute("aria-busy", "true");
      var checked = post(form.dataset.validate, new URLSearchParams({ rule: rule.value }))
        .then(function (response) {
          if (mine !== sent) { return null; }
          var shown = show(check, response);
          return shown && shown.then(function () {
            if (check.querySelector('[data-state="bad"]')) {
              rule.setAttribute("aria-invalid", "true");
            } else {
              rule.removeAttribute("aria-invalid");
            }
          });
        });
      var previewed = post(form.dataset.preview, data).then(function (response) {
        if (mine !== sent) { return null; }
        return show(preview, response);
      });
      Promise.all([checked, previewed]).then(function () {
        if (mine === sent) { form.removeAttribute("aria-busy"); }
      }, function () {
        if (mine !== sent) { return; }
        form.removeAttribute("aria-busy");
        preview.textContent = "The preview could not be reached; check the connection.";
      });
    }

    function later() {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(refresh, DELAY_MS);
    }

    [rule, basket, form.querySelector("#code"), form.querySelector("#description"),
      form.querySelector("#offer-id")].forEach(function (field) {
      if (field) { field.addEventListener("input", later); }
    });
    refresh();
  }

  rewardmilesConsole.on(function (root) {
    var form = root.querySelector ? root.querySelector("#offer-form") : null;
    if (!form || form.dataset.ready) { return; }
    form.dataset.ready = "1";
    start(form);
  });
})();
