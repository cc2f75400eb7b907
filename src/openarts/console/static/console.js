// The node-count chart of a job's page: uPlot, a step line from the job's node_count_metrics.
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("node-chart");
  if (!el || !window.uPlot) return;
  const data = JSON.parse(el.dataset.columns || "[[],[]]");
  if (!data[0].length) { el.textContent = "No node count yet."; return; }
  const stepped = uPlot.paths.stepped({ align: 1 });
  new uPlot({
    width: Math.min(el.clientWidth || 800, 1100), height: 180,
    scales: { y: { range: (u, lo, hi) => [0, Math.max(1, hi) + 1] } },
    axes: [{}, { label: "nodes", incrs: [1, 2, 5, 10, 20, 50, 100] }],
    series: [{}, { label: "nodes", stroke: "#2f6fde", width: 2, paths: stepped, fill: "rgba(47,111,222,.12)" }],
  }, data, el);
});
