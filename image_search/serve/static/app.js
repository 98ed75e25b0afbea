// The search page: pick, drop or paste a photo, optional filters, result cards. No framework, no
// build step, nothing loaded from another site. Text from the server is only ever set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
// crop: the box the shopper picked (pixels of the decoded photo), candidates: the boxes the
// localiser proposed for the whole photo, size: that photo's decoded width and height.
const state = { file: null, maxUploadMb: 10, busy: false, crop: null, candidates: [], size: null };

const MESSAGES = {
  413: "That photo is too large for this server.",
  415: "That file could not be read as a photo.",
  422: "The search could not be run with these settings.",
  501: "This server cannot do that yet.",
  503: "The server is busy. Try again in a moment.",
  504: "The search took too long. Try again in a moment.",
};

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "error" ? "message" : "message info";
  box.hidden = !text;
}

function option(select, value) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = value;
  select.append(o);
}

async function loadFacets() {
  try {
    const r = await fetch("/facets");
    if (!r.ok) return;
    const f = await r.json();
    f.categories.forEach((c) => option($("category"), c));
    if (f.type_filter && f.types.length) {
      f.types.forEach((t) => option($("type"), t));
      $("type-label").hidden = false;
    }
    if (!f.text_search) {
      $("text").disabled = true;
      $("text").placeholder = "not available on this server";
      $("text-label").title = "This server's searcher has no text tower.";
    }
    $("k").max = f.max_k;
    state.maxUploadMb = f.max_upload_mb;
  } catch (e) {
    showMessage("Cannot reach the search server.");
  }
}

function setFile(file) {
  if (!file) return;
  state.file = file;
  state.crop = null;
  state.candidates = [];
  drawBoxes(null);
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("photo").hidden = false;
  preview.onerror = () => { $("photo").hidden = true; };
  if (file.size > state.maxUploadMb * 1024 * 1024) {
    showMessage(`That photo is ${(file.size / 1048576).toFixed(1)} MB; this server takes up to ${state.maxUploadMb} MB.`);
    return;
  }
  search();
}

function formData() {
  const data = new FormData();
  data.append("image", state.file, state.file.name || "pasted-image");
  const fields = { k: $("k").value, min_price: $("min-price").value, max_price: $("max-price").value };
  if ($("category").value) data.append("categories", $("category").value);
  if (!$("type-label").hidden && $("type").value) data.append("types", $("type").value);
  if ($("in-stock").checked) data.append("in_stock", "true");
  if (!$("text").disabled && $("text").value.trim()) data.append("text", $("text").value.trim());
  if (state.crop) data.append("crop", state.crop.join(","));
  for (const [key, value] of Object.entries(fields)) if (value !== "") data.append(key, value);
  return data;
}

async function search() {
  if (!state.file) {
    showMessage("Choose, drop or paste a photo first.", "info");
    return;
  }
  if (state.busy) return;
  state.busy = true;
  $("search-button").disabled = true;
  showMessage("");
  $("timings").textContent = "searching…";
  try {
    const r = await fetch("/search", { method: "POST", body: formData() });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      $("results").replaceChildren();
      $("timings").textContent = "";
      const detail = typeof body.detail === "string" ? ` Details: ${body.detail}.` : "";
      showMessage((MESSAGES[r.status] || `The server answered ${r.status}.`) + detail);
      return;
    }
    render(body);
  } catch (e) {
    $("timings").textContent = "";
    showMessage("Cannot reach the search server.");
  } finally {
    state.busy = false;
    $("search-button").disabled = false;
  }
}

function render(body) {
  if (!state.crop) {  // a search of the whole photo: remember what the localiser proposed
    state.candidates = body.candidates || [];
    state.size = body.image_size;
  }
  drawBoxes(body.box);
  const list = $("results");
  list.replaceChildren(...body.results.map(card));
  const t = body.timings_ms;
  $("timings").textContent = body.results.length
    ? `${body.results.length} products in ${t.total.toFixed(1)} ms (decode ${t.decode.toFixed(1)}, queue ${t.queue.toFixed(1)}, ` +
      `embed ${t.embed.toFixed(1)} in a batch of ${body.batch_size}, ANN ${t.ann.toFixed(2)}, re-rank ${t.rerank.toFixed(2)})`
    : "";
  if (!body.results.length) showMessage("No product matches these filters.", "info");
}

// The localiser's boxes over the preview, in percent of the decoded photo (the preview shows the
// same upright photo at another scale). With two or more, each one the shopper clicks is searched.
function drawBoxes(searched) {
  const layer = $("boxes");
  layer.replaceChildren();
  const hint = $("boxes-hint");
  hint.hidden = true;
  if (!state.size || state.candidates.length < 2) return;
  const [w, h] = state.size;
  const same = (a, b) => a && b && a.every((v, i) => v === b[i]);
  const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);
  const larger = (b) => state.candidates.filter((c) => area(c) > area(b)).length;
  state.candidates.forEach((b, i) => {
    const el = document.createElement("button");
    el.type = "button";
    el.className = same(b, searched) ? "box searched" : "box";
    el.title = same(b, searched) ? "searched" : "search this object";
    el.setAttribute("aria-label", `object ${i + 1} of ${state.candidates.length}` + (same(b, searched) ? ", searched" : ""));
    Object.assign(el.style, {
      zIndex: String(1 + larger(b)),  // a box inside another stays clickable
      left: `${(100 * b[0]) / w}%`, top: `${(100 * b[1]) / h}%`,
      width: `${(100 * (b[2] - b[0])) / w}%`, height: `${(100 * (b[3] - b[1])) / h}%`,
    });
    el.addEventListener("click", (e) => {
      e.stopPropagation();  // not the drop zone's "choose a file"
      if (same(b, searched)) return;
      state.crop = b;
      search();
    });
    layer.append(el);
  });
  hint.textContent = `${state.candidates.length} objects found in your photo: click a box to search it.`;
  hint.hidden = false;
}

function card(hit) {
  const li = document.createElement("li");
  li.className = "card";
  li.dataset.id = hit.id;
  const img = document.createElement("img");
  img.src = hit.image_url;
  img.alt = hit.name;
  img.loading = "lazy";
  const name = document.createElement("h2");
  name.textContent = hit.name;
  const price = document.createElement("p");
  price.className = "price";
  price.textContent = hit.price.toFixed(2);
  const meta = document.createElement("p");
  meta.className = "meta";
  meta.textContent = `${hit.category} · score ${hit.score.toFixed(3)}`;
  const stock = document.createElement("p");
  stock.className = hit.in_stock ? "meta" : "meta out";
  stock.textContent = hit.in_stock ? "in stock" : "out of stock";
  const credit = document.createElement("p");
  credit.className = "credit";
  credit.textContent = `photo: ${hit.creator || "unknown"} (${hit.licence || "licence unknown"})`;
  li.append(img, name, price, meta, stock, credit);
  return li;
}

function firstFile(list) {
  for (const item of list || []) {
    const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
    if (file) return file;
  }
  return null;
}

document.addEventListener("DOMContentLoaded", () => {
  loadFacets();
  const drop = $("drop");
  $("file").addEventListener("change", (e) => setFile(e.target.files[0]));
  drop.addEventListener("click", (e) => { if (e.target.tagName !== "LABEL" && e.target.tagName !== "INPUT") $("file").click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = firstFile(e.dataTransfer.files);
    if (file) setFile(file); else showMessage("Drop a photo file (JPEG, PNG, WebP…).");
  });
  document.addEventListener("paste", (e) => {
    const file = firstFile(e.clipboardData && e.clipboardData.items);
    if (file) { e.preventDefault(); setFile(file); }
  });
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
});
