// Search, filters and sort on the rows the page already holds: no server, no request.
(function () {
  "use strict";
  var table = document.getElementById("kernels");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var search = document.getElementById("search");
  var count = document.getElementById("count");
  var filters = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var numeric = { name: true, version: true, shape: true };
  // What the search box looks in: the row's own text and every tag it carries.
  var texts = rows.map(function (row) { return (row.textContent + " " + row.getAttribute("data-tag")).toLowerCase(); });

  function apply() {
    var words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function (row, n) {
      var text = texts[n];
      var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
      filters.forEach(function (select) {
        if (!ok || !select.value) return;
        var key = select.getAttribute("data-filter");
        var value = row.getAttribute("data-" + key);
        ok = (key === "tag" || key === "label") ? JSON.parse(value).indexOf(select.value) >= 0 : value === select.value;
      });
      row.hidden = !ok;
      if (ok) shown += 1;
    });
    count.textContent = shown + " shown";
  }

  function sortBy(th) {
    var key = th.getAttribute("data-key");
    var descending = th.getAttribute("aria-sort") === "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var order = rows.map(function (row) { return [row.getAttribute("data-" + key), Number(row.getAttribute("data-name")), row]; });
    order.sort(function (a, b) {
      var x = numeric[key] ? Number(a[0]) - Number(b[0]) : (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
      if (descending) x = -x;
      return x || a[1] - b[1];
    });
    order.forEach(function (item) { body.appendChild(item[2]); });
  }

  search.addEventListener("input", apply);
  filters.forEach(function (select) { select.addEventListener("change", apply); });
  Array.prototype.forEach.call(table.querySelectorAll("th[data-key] button"), function (button) {
    button.addEventListener("click", function () { sortBy(button.parentNode); });
  });
  apply();
}());
