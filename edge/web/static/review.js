"use strict";
// The relabel page: the capture folder's images grouped by folder (_uncertain first, then the
// classes); one click or key files an image under a class (POST /review/move).
const UNCERTAIN = "_uncertain";
const PER_GROUP = 60;
const state = {labels: [], folders: {}, items: [], showReviewed: false, shown: {}, moved: 0, focus: null};
const $ = (id) => document.getElementById(id);

function toast(text, bad) {
  const t = $("toast");
  t.textContent = text;
  t.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, bad ? 6000 : 2500);
}

function suggested(item) {
  if (item.label) return item.label;
  return state.labels.includes(item.predicted) ? item.predicted : null;
}

function groupName(folder) {
  if (folder === UNCERTAIN) return "Uncertain";
  const label = Object.keys(state.folders).find((l) => state.folders[l] === folder);
  return label === undefined ? folder : label;
}

function card(item) {
  const pick = suggested(item);
  const score = typeof item.score === "number" ? " " + pct(item.score) : "";
  const guess = item.predicted ? "model: " + item.predicted + score : "no record";
  const buttons = state.labels.map((label, i) => el("button", {
    type: "button", class: "pick" + (label === pick ? " suggested" : ""), dataset: {label: label},
    title: (i < 9 ? "key " + (i + 1) + ": " : "") + (label === item.label ? "confirm " : "file under ") + label,
    style: "border-color:" + labelColour(label, state.labels)},
    (i < 9 ? (i + 1) + " " : "") + (label === item.label ? "\u2713 " : "") + label));
  const c = el("article", {class: "item" + (item.reviewed ? " reviewed" : ""), tabindex: "0",
                           dataset: {file: item.file}},
    el("img", {src: withToken("/capture", {file: item.file, thumb: 1}), alt: item.file, loading: "lazy"}),
    el("div", {class: "caption"}, el("span", {text: guess}),
       item.reviewed ? el("span", {class: "badge ok", text: "reviewed"}) : ""),
    el("div", {class: "picks"}, ...buttons));
  c.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.pick");
    if (b) move(item, b.dataset.label);
  });
  c.addEventListener("focus", () => { state.focus = item.file; });
  return c;
}

function render() {
  const groups = new Map();
  const order = [UNCERTAIN, ...state.labels.map((l) => state.folders[l])];
  for (const folder of order) groups.set(folder, []);
  let open = 0;
  for (const item of state.items) {
    if (!item.reviewed) open++;
    if (item.reviewed && !state.showReviewed) continue;
    if (!groups.has(item.folder)) groups.set(item.folder, []);
    groups.get(item.folder).push(item);
  }
  $("count").textContent = open + " to review, " + state.items.length + " in all";
  const main = $("groups");
  const sections = [];
  for (const [folder, items] of groups) {
    if (!items.length) continue;
    const limit = state.shown[folder] || PER_GROUP;
    const cards = el("div", {class: "cards"}, ...items.slice(0, limit).map(card));
    const sec = el("section", {class: "group", dataset: {folder: folder}},
      el("h2", {text: groupName(folder) + " (" + items.length + ")"}), cards);
    if (items.length > limit) {
      const more = el("button", {type: "button", class: "more", text: "show " + Math.min(PER_GROUP, items.length - limit) + " more"});
      more.addEventListener("click", () => { state.shown[folder] = limit + PER_GROUP; render(); });
      sec.append(more);
    }
    sections.push(sec);
  }
  if (!sections.length) sections.push(el("p", {class: "muted", text: state.items.length ?
    "Everything is reviewed." : "No captures in this folder yet."}));
  main.replaceChildren(...sections);
  document.body.dataset.moved = String(state.moved);
}

function cards() {
  return [...document.querySelectorAll("article.item")];
}

function focusFile(file, fallbackIndex) {
  const all = cards();
  const c = all.find((x) => x.dataset.file === file) || all[Math.min(fallbackIndex, all.length - 1)];
  if (c) c.focus();
}

async function move(item, label) {
  const index = cards().findIndex((x) => x.dataset.file === item.file);
  try {
    const r = await fetch(withToken("/review/move"), {method: "POST", cache: "no-store",
      headers: {"Content-Type": "application/json", "X-Edgesight": "1"},
      body: JSON.stringify({file: item.file, label: label})});
    const body = await r.json().catch(() => ({error: r.status + " " + r.statusText}));
    if (!r.ok) throw new Error(body.error || r.statusText);
    item.file = body.file;
    item.folder = body.file.split("/")[0];
    item.label = label;
    item.reviewed = true;
    state.moved++;
    toast(body.old_file === body.file ? "confirmed " + label : "moved to " + label);
    render();
    focusFile(state.showReviewed ? item.file : null, index);
  } catch (e) {
    toast(String(e.message || e), true);
  }
}

function onKey(ev) {
  const c = document.activeElement && document.activeElement.closest ? document.activeElement.closest("article.item") : null;
  const all = cards();
  if (!all.length || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const i = c ? all.indexOf(c) : -1;
  if (ev.key === "ArrowRight" || ev.key === "j") { all[Math.min(i + 1, all.length - 1)].focus(); ev.preventDefault(); return; }
  if (ev.key === "ArrowLeft" || ev.key === "k") { all[Math.max(i - 1, 0)].focus(); ev.preventDefault(); return; }
  if (!c) return;
  const item = state.items.find((x) => x.file === c.dataset.file);
  if (!item) return;
  if (/^[1-9]$/.test(ev.key) && Number(ev.key) <= state.labels.length) {
    move(item, state.labels[Number(ev.key) - 1]);
    ev.preventDefault();
  } else if (ev.key === "Enter" && ev.target === c && suggested(item)) {
    move(item, suggested(item));
    ev.preventDefault();
  }
}

async function start() {
  $("show-reviewed").addEventListener("change", (ev) => { state.showReviewed = ev.target.checked; render(); });
  document.addEventListener("keydown", onKey);
  getJSON("/config").then((c) => { $("live-link").hidden = c.live === false; }).catch(() => {});
  try {
    const r = await getJSON("/review/items");
    state.labels = r.labels;
    state.folders = r.folders;
    state.items = r.items;
    render();
    const wanted = decodeURIComponent(location.hash.slice(1));
    if (wanted) {
      state.showReviewed = state.showReviewed || !!state.items.find((x) => x.file === wanted && x.reviewed);
      $("show-reviewed").checked = state.showReviewed;
      render();
      focusFile(wanted, 0);
    }
  } catch (e) {
    $("groups").replaceChildren(el("p", {class: "error", text: "Cannot load the captures: " + (e.message || e)}));
  }
}

start();
