// pyqueue dashboard: confirmation prompts, select-all boxes and the live graph.
// Plain JavaScript with no build step; every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  setUpConfirmations();
  setUpSelectAll();
  var live = document.getElementById("live");
  if (live) {
    new LiveGraph(live).start();
  }
});

// Forms with data-confirm ask before they submit (bulk and destructive actions).
function setUpConfirmations() {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
}

function setUpSelectAll() {
  document.querySelectorAll("input[data-select-all]").forEach(function (box) {
    box.addEventListener("change", function () {
      document.querySelectorAll("input[name=key][form=bulk]").forEach(function (item) {
        item.checked = box.checked;
      });
    });
  });
}

// Polls stats.json and draws the jobs processed and failed between two polls.
function LiveGraph(section) {
  this.section = section;
  this.url = section.getAttribute("data-stats-url");
  this.interval = parseInt(section.getAttribute("data-poll"), 10) || 5;
  this.maxPoints = 60;
  this.points = [];
  this.previous = null;
  this.timer = null;
  this.paused = false;
  this.status = document.getElementById("live-status");
  this.svg = document.getElementById("live-graph");
}

LiveGraph.prototype.start = function () {
  var self = this;
  var select = document.getElementById("live-interval");
  select.addEventListener("change", function () {
    self.interval = parseInt(select.value, 10);
    self.schedule();
  });
  var toggle = document.getElementById("live-toggle");
  toggle.addEventListener("click", function () {
    self.paused = !self.paused;
    toggle.textContent = self.paused ? "Resume" : "Pause";
    self.schedule();
  });
  this.poll();
  this.schedule();
};

LiveGraph.prototype.schedule = function () {
  var self = this;
  window.clearInterval(this.timer);
  if (!this.paused) {
    this.timer = window.setInterval(function () { self.poll(); }, this.interval * 1000);
  }
};

LiveGraph.prototype.poll = function () {
  var self = this;
  fetch(this.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response.json();
    })
    .then(function (stats) { self.update(stats); })
    .catch(function (error) {
      self.status.textContent = "poll failed: " + error.message;
    });
};

LiveGraph.prototype.update = function (stats) {
  document.querySelectorAll("[data-stat]").forEach(function (element) {
    var value = stats[element.getAttribute("data-stat")];
    if (typeof value === "number") {
      element.textContent = value.toLocaleString("en-US");
    }
  });
  if (this.previous !== null) {
    // A reset of the counters gives a negative step; show it as zero.
    this.points.push({
      processed: Math.max(0, stats.processed - this.previous.processed),
      failed: Math.max(0, stats.failed - this.previous.failed),
    });
    if (this.points.length > this.maxPoints) {
      this.points.shift();
    }
    this.draw();
  }
  this.previous = stats;
  var last = this.points[this.points.length - 1];
  this.status.textContent = last
    ? "last poll: " + last.processed + " processed, " + last.failed + " failed"
    : "first poll done; the graph starts with the next one";
};

LiveGraph.prototype.draw = function () {
  var width = 600;
  var height = 120;
  var peak = 1;
  this.points.forEach(function (point) {
    peak = Math.max(peak, point.processed, point.failed);
  });
  var step = width / (this.maxPoints - 1);
  var offset = this.maxPoints - this.points.length;
  var line = function (points, key) {
    return points.map(function (point, index) {
      var x = (offset + index) * step;
      var y = height - 4 - (point[key] / peak) * (height - 8);
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
  };
  this.svg.querySelector("polyline.processed").setAttribute("points", line(this.points, "processed"));
  this.svg.querySelector("polyline.failed").setAttribute("points", line(this.points, "failed"));
};
