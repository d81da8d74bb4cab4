// The pages' one script; every page works without it.
//
// 1. Times: the server writes each `<time datetime="...">` in UTC with words that read without
//    this script ("2 hours ago (Thu 3 Dec 2026 11:55 UTC)"); here they are said again in the
//    viewer's own zone, relative and absolute ("2 hours ago (Thu, Dec 3, 2026, 12:55 PM CET)"; a
//    deadline absolute first).
// 2. The run page, live: each entry the server streams (server-sent events) makes the page read
//    the stages' states again and recolour the DAG and the table, and a polite live region says
//    what changed. The page keeps its place: it asks only for the entries after the newest one it
//    rendered (`data-after`), and a reconnect sends `Last-Event-ID` by itself, so nothing the
//    page shows is appended twice.
(function () {
  const rtf = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;
  const abs = window.Intl ? new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" }) : null;
  const relative = (ms) => {
    const s = Math.round(ms / 1000);
    const a = Math.abs(s);
    if (a < 45) return "just now";
    if (a < 3600) return rtf.format(Math.round(s / 60), "minute");
    if (a < 86400) return rtf.format(Math.round(s / 3600), "hour");
    return rtf.format(Math.round(s / 86400), "day");
  };
  const localise = (root) => {
    if (!rtf || !abs) return;
    for (const t of root.querySelectorAll("time[datetime]")) {
      const at = new Date(t.getAttribute("datetime"));
      if (isNaN(at)) continue;
      const rel = relative(at - Date.now());
      t.textContent = t.classList.contains("deadline") ? abs.format(at) + " (" + rel + ")" : rel + " (" + abs.format(at) + ")";
      t.title = at.toISOString();
    }
  };
  localise(document);

  const dag = document.getElementById("dag");
  if (!dag || dag.dataset.live !== "true" || !window.EventSource) return;
  const run = dag.dataset.run;
  const events = document.getElementById("events");
  const live = document.getElementById("live");
  const refresh = async () => {
    const r = await fetch("/ui/runs/" + encodeURIComponent(run) + "/state", { credentials: "same-origin" });
    if (!r.ok) return;
    const s = await r.json();
    const said = [];
    for (const st of s.stages) {
      const node = dag.querySelector('g.stage[data-stage="' + CSS.escape(st.name) + '"]');
      if (node) {
        const before = node.getAttribute("class").replace(/^stage /, "");
        if (before !== st.state) said.push(st.name + " is " + st.state);
        node.setAttribute("class", "stage " + st.state);
        const label = node.getAttribute("aria-label") || "";
        node.setAttribute("aria-label", label.replace(/, [a-z-]+$/, ", " + st.state));
        const t = node.querySelector("text:last-of-type");
        if (t) t.textContent = t.textContent.replace(/[a-z-]+$/, st.state);
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
    if (head.textContent !== s.state) said.push("the run is " + s.state);
    head.className = "state " + s.state;
    head.textContent = s.state;
    if (live && said.length) live.textContent = said.join("; ") + ".";
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
