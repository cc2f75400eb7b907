// A job page's parts from console/logs.py, console/usage.py and console/fragments.py: the followed log,
// the CPU and memory charts, and the answer for a job that is gone.

// A fragment of a job that no longer exists answers 404 with a message (console/fragments.py). htmx
// leaves error answers out by default: this one is swapped in, in the polling element's place, so the
// polling stops.
document.addEventListener("htmx:beforeSwap", (e) => {
  const xhr = e.detail.xhr;
  if (xhr && xhr.status === 404 && xhr.getResponseHeader("X-Openarts-Missing")) {
    e.detail.shouldSwap = true;
    e.detail.isError = false;
  }
});

// The followed log: lines are appended out of band to #log-lines; it stays scrolled to its end if it
// was there, and keeps its last MAX_LOG_LINES lines (the oldest appended pieces go first).
const MAX_LOG_LINES = 20000;
const newlines = (node) => (node.textContent.match(/\n/g) || []).length;
document.addEventListener("htmx:oobBeforeSwap", (e) => {
  const pre = e.detail.target;
  if (pre && pre.id === "log-lines") pre.dataset.atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40 ? "1" : "";
});
document.addEventListener("htmx:oobAfterSwap", (e) => {
  const pre = e.detail.target;
  if (!pre || pre.id !== "log-lines") return;
  let lines = newlines(pre);
  while (lines > MAX_LOG_LINES && pre.firstChild && pre.firstChild !== pre.lastChild) {
    lines -= newlines(pre.firstChild);
    pre.firstChild.remove();
  }
  if (pre.dataset.atEnd) pre.scrollTop = pre.scrollHeight;
});

// CPU and memory per task (console/usage.py): a line per task, a point a minute; asked again every
// 20 s while the job runs.
const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d"];
function usageChart(el, title, columns, tasks) {
  const times = columns[0];  // half a minute each side: a single minute gets a span of its own
  return new uPlot({
    title, width: Math.min(el.clientWidth || 800, 1100), height: 180,
    scales: {
      x: { time: true, auto: false, range: [times[0] - 30, times[times.length - 1] + 30] },
      y: { range: (u, lo, hi) => [0, Math.max(100, Math.ceil(hi || 0))] },
    },
    axes: [{}, { values: (u, vals) => vals.map((v) => v + "%") }],
    series: [{}, ...tasks.map((t, i) => ({
      label: t, stroke: COLORS[i % COLORS.length], width: 2, points: { show: true, size: 5 },
      value: (u, v) => (v == null ? "–" : v.toFixed(1) + "%"),
    }))],
  }, columns, el);
}
function showUsage(box, data, charts) {
  charts.forEach((c) => c.destroy());
  charts.length = 0;
  const cpu = box.querySelector("#cpu-chart"), mem = box.querySelector("#mem-chart");
  const sampled = (cols) => cols.slice(1).some((values) => values.some((v) => v != null));
  const empty = !data.tasks.length || !(sampled(data.cpu) || sampled(data.mem));
  cpu.textContent = empty ? (data.final ? "No CPU or memory sample was taken." : "No sample yet.") : "";
  mem.textContent = "";
  mem.hidden = empty;
  if (empty) return;
  charts.push(usageChart(cpu, "CPU (% of the flavor's cores)", data.cpu, data.tasks));
  charts.push(usageChart(mem, "Memory (% of the flavor's memory)", data.mem, data.tasks));
}
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("usage");
  if (!box || !window.uPlot) return;
  const charts = [];
  let data = JSON.parse(box.dataset.columns || '{"tasks": [], "cpu": [[]], "mem": [[]], "final": true}');
  showUsage(box, data, charts);
  if (data.final) return;
  const timer = setInterval(async () => {
    const r = await fetch(box.dataset.url, { headers: { Accept: "application/json" } }).catch(() => null);
    if (!r) return;  // the network: asked again next time
    if (!r.ok || !(r.headers.get("content-type") || "").includes("json")) {
      clearInterval(timer);  // gone, refused, or signed out (HX-Redirect: the sign-in page)
      if (r.headers.get("hx-redirect")) window.location.href = r.headers.get("hx-redirect");
      return;
    }
    try { data = await r.json(); } catch (e) { clearInterval(timer); return; }
    showUsage(box, data, charts);
    if (data.final) clearInterval(timer);
  }, 20000);
});
