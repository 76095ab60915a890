"use strict";
// The live page: polls /status (label, statistics, drift), /history (the charts) and the newest
// captures; draws the score chart and the label timeline on canvases.
const WINDOW_S = 120;
const state = {labels: [], items: [], seq: 0, changes: 0, lastLabel: null, captures: false};
const $ = (id) => document.getElementById(id);

function setConnected(ok) {
  const c = $("conn");
  c.textContent = ok ? "live" : "no connection to the device";
  c.className = "badge " + (ok ? "ok" : "alert");
}

function fixed(v, digits) {
  return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "-";
}

function showLabel(now) {
  if (now) {
    const label = $("label");
    if (label.textContent !== now.label) {
      label.textContent = now.label;
      label.style.color = labelColour(now.label, state.labels);
    }
    $("score").textContent = pct(now.score);
    $("frame").textContent = "frame " + now.frame;
    const bar = $("score-bar");
    bar.style.width = Math.max(0, Math.min(100, 100 * now.score)).toFixed(1) + "%";
    bar.style.background = labelColour(now.label, state.labels);
  }
}

function showNow(s) {
  // The label follows /history (polled more often) once it has entries.
  if (!state.items.length) showLabel(s.latest || s.result);
  const st = s.stats || {};
  const lat = st.latency_ms || {};
  $("fps").textContent = fixed(st.fps, 1);
  $("p50").textContent = lat.p50 == null ? "-" : fixed(lat.p50, 1) + " ms";
  $("p95").textContent = lat.p95 == null ? "-" : fixed(lat.p95, 1) + " ms";
  $("frames").textContent = st.frames == null ? "-" : String(st.frames);
  $("dropped").textContent = st.dropped == null ? "-" : String(st.dropped);
  $("clients").textContent = s.clients == null ? "-" : String(s.clients);
  showDrift(s.drift);
}

const DRIFT_FIGURES = [["window", "window", 0], ["frames", "frames", 0], ["psi_scores", "PSI scores", 3],
                       ["psi_classes", "PSI classes", 3], ["brightness_shift", "brightness shift", 3],
                       ["contrast_shift", "contrast shift", 3]];

function showDrift(d) {
  const badge = $("drift-state"), figs = $("drift-figures"), reasons = $("drift-reasons");
  const card = $("drift-card");
  if (!d || typeof d !== "object") {
    badge.textContent = "no baseline";
    badge.className = "badge";
    card.classList.remove("alerting");
    figs.replaceChildren();
    reasons.replaceChildren();
    $("drift-none").hidden = false;
    return;
  }
  $("drift-none").hidden = true;
  badge.textContent = d.alert ? "ALERT" : "ok";
  badge.className = "badge " + (d.alert ? "alert" : "ok");
  card.classList.toggle("alerting", !!d.alert);
  figs.replaceChildren(...DRIFT_FIGURES.filter(([k]) => k in d).map(([k, name, digits]) =>
    el("div", {}, el("dt", {text: name}), el("dd", {text: digits ? fixed(d[k], digits) : String(d[k] ?? "-")}))));
  reasons.replaceChildren(...(Array.isArray(d.reasons) ? d.reasons : []).map((r) => el("li", {text: String(r)})));
}

function sizeCanvas(canvas) {
  // Drawn in CSS pixels on a backing store of device pixels, so lines stay sharp on a phone.
  const ratio = window.devicePixelRatio || 1;
  if (!canvas.dataset.cssHeight) canvas.dataset.cssHeight = canvas.getAttribute("height");
  const w = Math.max(100, canvas.clientWidth), h = Number(canvas.dataset.cssHeight);
  if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
  if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
  canvas.style.height = h + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return [ctx, w, h];
}

function visibleItems() {
  // The last WINDOW_S seconds; a shorter history fills the width (at least 10 s).
  const items = state.items;
  if (!items.length) return [[], 0, 10];
  const end = items[items.length - 1].time;
  const shown = items.filter((it) => it.time >= end - WINDOW_S);
  return [shown, end, Math.min(WINDOW_S, Math.max(10, end - shown[0].time))];
}

function drawChart() {
  const canvas = $("chart");
  const [ctx, w, h] = sizeCanvas(canvas);
  const [items, end, span] = visibleItems();
  const left = 34, right = 6, top = 6, bottom = 18;
  const x = (t) => left + (w - left - right) * (1 - (end - t) / span);
  const y = (v) => top + (h - top - bottom) * (1 - v);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#999";
  ctx.strokeStyle = "#333";
  ctx.lineWidth = 1;
  for (const v of [0, 0.5, 1]) {
    ctx.beginPath();
    ctx.moveTo(left, y(v));
    ctx.lineTo(w - right, y(v));
    ctx.stroke();
    ctx.fillText(v.toFixed(1), 4, y(v) + 4);
  }
  ctx.fillText("-" + Math.round(span) + " s", left, h - 4);
  ctx.fillText("now", w - right - 24, h - 4);
  ctx.strokeStyle = "#ddd";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  items.forEach((it, i) => (i ? ctx.lineTo(x(it.time), y(it.score)) : ctx.moveTo(x(it.time), y(it.score))));
  ctx.stroke();
  for (const it of items) {
    ctx.fillStyle = labelColour(it.label, state.labels);
    ctx.fillRect(x(it.time) - 1.5, y(it.score) - 1.5, 3, 3);
  }
  canvas.dataset.points = String(items.length);
  $("chart-span").textContent = items.length ? "(last " + Math.round(span) + " s)" : "";
}

function drawTimeline() {
  const canvas = $("timeline");
  const [ctx, w, h] = sizeCanvas(canvas);
  const [items, end, span] = visibleItems();
  const left = 34, right = 6;
  const x = (t) => left + (w - left - right) * (1 - (end - t) / span);
  ctx.clearRect(0, 0, w, h);
  let segments = 0;
  const seen = new Set();
  for (let i = 0; i < items.length; i++) {
    const it = items[i];
    if (i > 0 && items[i - 1].label === it.label) continue;
    let j = i;
    while (j + 1 < items.length && items[j + 1].label === it.label) j++;
    const x0 = x(it.time), x1 = j + 1 < items.length ? x(items[j + 1].time) : w - right;
    ctx.fillStyle = labelColour(it.label, state.labels);
    ctx.fillRect(x0, 4, Math.max(2, x1 - x0), h - 8);
    seen.add(it.label);
    segments++;
  }
  canvas.dataset.segments = String(segments);
  const legend = $("legend");
  const names = [...state.labels.filter((l) => seen.has(l)), ...[...seen].filter((l) => !state.labels.includes(l))];
  if (legend.dataset.names !== names.join("\n")) {
    legend.dataset.names = names.join("\n");
    legend.replaceChildren(...names.map((l) => el("span", {class: "key"},
      el("i", {style: "background:" + labelColour(l, state.labels)}), document.createTextNode(l))));
  }
}

async function pollStatus() {
  try {
    showNow(await getJSON("/status"));
    setConnected(true);
  } catch (e) {
    setConnected(false);
  }
}

async function pollHistory() {
  try {
    const h = await getJSON("/history", {after: state.seq});
    if (Array.isArray(h.labels) && h.labels.length) state.labels = h.labels;
    for (const it of h.items) {
      if (state.lastLabel !== null && it.label !== state.lastLabel) state.changes++;
      state.lastLabel = it.label;
      state.items.push(it);
      state.seq = it.seq;
    }
    if (state.items.length > 2400) state.items.splice(0, state.items.length - 2400);
    if (h.items.length) showLabel(h.items[h.items.length - 1]);
    document.body.dataset.labelChanges = String(state.changes);
    drawChart();
    drawTimeline();
  } catch (e) {
    setConnected(false);
  }
}

async function pollCaptures() {
  if (!state.captures) return;
  try {
    const r = await getJSON("/captures/recent", {limit: 8});
    const thumbs = $("thumbs");
    const key = r.items.map((it) => it.file + it.label).join("\n");
    if (thumbs.dataset.key === key) return;
    thumbs.dataset.key = key;
    $("thumbs-none").hidden = r.items.length > 0;
    thumbs.replaceChildren(...r.items.map((it) => el("a", {href: withToken("/review") + "#" + encodeURIComponent(it.file),
      class: "thumb" + (it.uncertain ? " uncertain" : ""), title: it.file},
      el("img", {src: withToken("/capture", {file: it.file, thumb: 1}), alt: it.label || "capture", loading: "lazy"}),
      el("span", {text: (it.uncertain ? "? " : "") + (it.label || "") + " " + pct(it.score)}))));
  } catch (e) {
    /* shown by the connection badge */
  }
}

function reconnectStream() {
  const img = $("stream");
  img.addEventListener("error", () => {
    setTimeout(() => { img.src = withToken("/stream.mjpg", {t: Date.now()}); }, 2000);
  });
}

async function start() {
  reconnectStream();
  try {
    const cfg = await getJSON("/config");
    state.labels = cfg.labels || [];
    state.captures = !!cfg.captures;
    $("captures-card").hidden = !state.captures;
    $("review-link").hidden = !state.captures;
  } catch (e) {
    setConnected(false);
  }
  pollStatus();
  pollHistory();
  pollCaptures();
  setInterval(pollStatus, 1000);
  setInterval(pollHistory, 300);
  setInterval(pollCaptures, 3000);
  window.addEventListener("resize", () => { drawChart(); drawTimeline(); });
}

start();
