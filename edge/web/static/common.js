"use strict";
// Shared by the pages: the token of the address goes with every request they make.
const TOKEN = new URLSearchParams(location.search).get("token");

function withToken(path, params) {
  const q = new URLSearchParams(params || {});
  if (TOKEN) q.set("token", TOKEN);
  const s = q.toString();
  return s ? path + (path.includes("?") ? "&" : "?") + s : path;
}

async function getJSON(path, params) {
  const r = await fetch(withToken(path, params), {cache: "no-store"});
  const body = await r.json().catch(() => ({error: r.status + " " + r.statusText}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

const PALETTE = ["#4e9af1", "#f1a64e", "#5cc46a", "#e8575a", "#b07cf0", "#e6d35a", "#4fd1c5", "#f07cc0",
                 "#9aa64e", "#c98b5a", "#7f8cff", "#62b0a0"];

function labelColour(label, labels) {
  if (label === "unknown") return "#777";
  let i = labels.indexOf(label);
  if (i < 0) {
    i = 0;
    for (const ch of String(label)) i = (i * 31 + ch.charCodeAt(0)) >>> 0;
  }
  return PALETTE[i % PALETTE.length];
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "text") e.textContent = v;
    else if (k === "style") e.style.cssText = v;  // through the CSSOM: the pages allow no inline styles
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function pct(score) {
  return typeof score === "number" ? (100 * score).toFixed(1) + " %" : "";
}
