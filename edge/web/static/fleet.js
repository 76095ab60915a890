"use strict";
// The fleet table: /fleet.json every second, one row per device; stale rows and drift alerts marked.

function ago(s) {
  if (s === null || s === undefined) return "-";
  if (s < 120) return Math.round(s) + " s ago";
  return s < 7200 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
}

function row(d) {
  const rates = Object.entries(d.rates || {}).slice(0, 3).map(([k, v]) => k + " " + v).join(", ") || "-";
  const tr = el("tr", {class: d.state + (d.drift_alert ? " alert" : ""), dataset: {device: d.device}},
    el("td", {text: d.device}),
    el("td", {}, el("span", {class: "badge " + (d.state === "live" ? "ok" : "warn"), text: d.state})),
    el("td", {text: d.mqtt || "-"}),
    el("td", {text: ago(d.age)}),
    el("td", {class: "num", text: d.fps === null ? "-" : d.fps.toFixed(1)}),
    el("td", {text: d.label || "-"}),
    el("td", {text: rates}),
    el("td", {class: d.drift_alert ? "error" : "", text: d.drift || "-"}),
    el("td", {class: "muted", text: d.release || "-"}));
  return tr;
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const s = await getJSON("/fleet.json");
    document.getElementById("summary").textContent =
      `${s.prefix}/#: ${s.devices.length} devices, ${s.live} live, ${s.stale} stale, ${s.alerts} drift alerts` +
      (s.connected === false ? " (broker not connected)" : "");
    document.querySelector("#devices tbody").replaceChildren(...s.devices.map(row));
    error.hidden = true;
  } catch (e) {
    error.textContent = String(e.message || e);
    error.hidden = false;
  }
}

refresh();
setInterval(refresh, 1000);
