/* Today: draws the hours the page embeds (#today-data) as two uPlot charts, miles issued and
   reversed and partner requests by answer. The table below the charts has the same numbers. */
(function () {
  "use strict";
  var charts = [];

  function series(label, stroke) {
    return { label: label, stroke: stroke, width: 2, points: { show: true } };
  }

  function draw(element, data, labels, values, colours) {
    var width = Math.max(element.clientWidth, 300);
    var options = {
      width: width,
      height: 240,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), data.zone); },
      scales: { x: { time: true } },
      axes: [{}, { size: 70 }],
      series: [{ label: "Hour" }].concat(labels.map(function (label, i) {
        return series(label, colours[i]);
      }))
    };
    var chart = new uPlot(options, [data.hours].concat(values), element);
    element.dataset.points = String(data.hours.length);
    element.dataset.series = JSON.stringify(labels);
    charts.push(chart);
  }

  rewardmilesConsole.on(function (root) {
    var source = (root.querySelector ? root : document).querySelector("#today-data") ||
      document.getElementById("today-data");
    if (!source || source.dataset.drawn) { return; }
    source.dataset.drawn = "1";
    charts.forEach(function (chart) { chart.destroy(); });
    charts = [];
    var data = JSON.parse(source.textContent);
    if (typeof uPlot === "undefined") { return; }  // the table has every number
    draw(document.getElementById("today-miles-chart"), data, ["Issued", "Reversed"],
      [data.issued, data.reversed], ["#1f6f3f", "#a4161a"]);
    var outcomes = Object.keys(data.requests);
    draw(document.getElementById("today-requests-chart"), data, outcomes,
      outcomes.map(function (o) { return data.requests[o]; }),
      ["#0b5cad", "#6a4c93", "#f0a202", "#a4161a"]);
  });
})();
