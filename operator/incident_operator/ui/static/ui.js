// incident-operator UI: the list follows the API server while the page is open.
// Our own few lines, served from this origin. Without them (JavaScript off)
// every page still works; a reload shows what changed.
(function () {
  "use strict";
  var table = document.getElementById("incidents");
  if (!table || !window.EventSource || !window.fetch) {
    return;
  }
  var live = document.getElementById("live");
  var counts = document.getElementById("counts");
  var pending = null;
  var loading = false;

  function shownVersion() {
    return table.tBodies[0].getAttribute("data-version");
  }

  // The rows for the filters in the address bar, rendered (and escaped) by
  // the server; parsed as inert HTML, then swapped in whole.
  function refresh() {
    pending = null;
    if (loading) {
      pending = setTimeout(refresh, 250);
      return;
    }
    loading = true;
    fetch(table.getAttribute("data-rows") + window.location.search, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    })
      .then(function (answer) {
        if (!answer.ok) {
          throw new Error("rows: " + answer.status);
        }
        return answer.text();
      })
      .then(function (html) {
        var parsed = new DOMParser().parseFromString("<table>" + html + "</table>", "text/html");
        var rows = parsed.querySelector("tbody");
        if (rows) {
          table.replaceChild(document.importNode(rows, true), table.tBodies[0]);
          var matched = rows.getAttribute("data-matched");
          var total = rows.getAttribute("data-total");
          var shown = rows.getAttribute("data-shown");
          if (counts && matched !== null) {
            var said = matched + " of " + total + " Incidents";
            if (Number(matched) > Number(shown)) {
              said += ", the newest " + shown + " shown: narrow the filters";
            }
            counts.textContent = said;
          }
        }
      })
      .catch(function () {
        if (live) {
          live.hidden = true;
        }
      })
      .then(function () {
        loading = false;
      });
  }

  var stream = new EventSource(table.getAttribute("data-stream"), { withCredentials: true });
  stream.addEventListener("open", function () {
    if (live) {
      live.hidden = false;
    }
  });
  stream.addEventListener("error", function () {
    if (live) {
      live.hidden = true;
    }
  });
  stream.addEventListener("changed", function (event) {
    if (event.data === shownVersion() || pending !== null) {
      return;
    }
    pending = setTimeout(refresh, 100);
  });
})();
