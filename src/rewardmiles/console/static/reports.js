/* Reports: a table marked data-sortable sorts by the column whose header button is pressed
   (again: the other way); the header carries aria-sort. Numbers (.num cells, or data-value)
   sort as numbers. */
(function () {
  "use strict";

  function value(row, index, numeric) {
    var cell = row.cells[index];
    var text = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
    if (numeric) {
      var number = parseFloat(text.replace(/,/g, ""));
      return isNaN(number) ? -Infinity : number;
    }
    return text;
  }

  function sortBy(table, header) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var index = headers.indexOf(header);
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var numeric = header.classList.contains("num");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, index, numeric);
      var y = value(b, index, numeric);
      var order = numeric ? x - y : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  rewardmilesConsole.on(function (root) {
    root.querySelectorAll("table[data-sortable]").forEach(function (table) {
      if (table.dataset.ready) { return; }
      table.dataset.ready = "1";
      table.querySelectorAll("th button.sort").forEach(function (button) {
        button.addEventListener("click", function () { sortBy(table, button.closest("th")); });
      });
    });
  });
})();
