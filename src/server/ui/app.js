// The run page, live: each entry the server streams (server-sent events) makes the page read the
// stages' states again and recolour the DAG and the table. Without JavaScript the page is the
// same, as of when it was loaded. The page keeps its place: it asks only for the entries after
// the newest one it rendered (`data-after`), and a reconnect sends `Last-Event-ID` by itself, so
// nothing the page shows is appended twice.
(function () {
  const dag = document.getElementById("dag");
  if (!dag || dag.dataset.live !== "true" || !window.EventSource) return;
  const run = dag.dataset.run;
  const events = document.getElementById("events");
  const refresh = async () => {
    const r = await fetch("/ui/runs/" + encodeURIComponent(run) + "/state", { credentials: "same-origin" });
    if (!r.ok) return;
    const s = await r.json();
    for (const st of s.stages) {
      const node = dag.querySelector('g.stage[data-stage="' + CSS.escape(st.name) + '"]');
      if (node) {
        node.setAttribute("class", "stage " + st.state);
        const t = node.querySelector(".state");
        if (t) t.textContent = st.state;
      }
      const row = document.querySelector('tr[data-stage="' + CSS.escape(st.name) + '"]');
      if (row) {
        const cell = row.querySelector("td.state");
        cell.className = "state " + st.state;
        cell.textContent = st.state;
        row.querySelector("td.message").textContent = st.message;
      }
    }
    const head = document.getElementById("run-state");
    head.className = "state " + s.state;
    head.textContent = s.state;
  };
  let seen = Number(dag.dataset.after) || 0;
  const source = new EventSource("/ui/runs/" + encodeURIComponent(run) + "/events?after=" + seen);
  source.onmessage = source.onerror = null;
  const on = (e) => {
    const entry = JSON.parse(e.data);
    if (entry.id <= seen) return;
    seen = entry.id;
    if (events) {
      const li = document.createElement("li");
      li.textContent = entry.kind + " " + (entry.stage ? entry.stage + " " : "") + entry.detail + " (" + entry.actor + ")";
      events.appendChild(li);
    }
    refresh();
    if (entry.kind === "run") source.close();
  };
  for (const kind of ["trigger", "run", "stage", "decision", "policy", "break-glass", "rollback", "callback", "webhook-call", "notification"]) {
    source.addEventListener(kind, on);
  }
})();
