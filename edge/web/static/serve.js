"use strict";
// The inference server's page: posts the chosen file to /classify and shows the result.
const $ = (id) => document.getElementById(id);

async function classify(file) {
  $("error").hidden = true;
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  try {
    const r = await fetch(withToken("/classify"), {method: "POST", body: file, cache: "no-store",
                                                    headers: {"Content-Type": "application/octet-stream"}});
    const body = await r.json().catch(() => ({error: r.status + " " + r.statusText}));
    if (!r.ok) throw new Error(body.error || r.statusText);
    $("label").textContent = body.label;
    $("score").textContent = pct(body.score) + " in " + body.latency_ms.toFixed(1) + " ms";
    $("top").replaceChildren(...body.top_k.map((t) => el("li", {text: t.label + " " + pct(t.score)})));
  } catch (e) {
    $("error").textContent = String(e.message || e);
    $("error").hidden = false;
  }
}

$("file").addEventListener("change", (ev) => { if (ev.target.files.length) classify(ev.target.files[0]); });
getJSON("/status").then((s) => {
  $("model").textContent = (s.model.name || "") + " - " + (s.model.labels || []).length + " classes";
}).catch(() => {});
