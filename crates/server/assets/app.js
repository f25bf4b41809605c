// semi serve's page: draw boxes, submit a job, poll its progress, show the result.
// Plain JS, no dependencies; all state lives in `state`.
"use strict";

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                "#f032e6", "#bfef45", "#469990", "#9a6324"];
const HANDLE = 10; // px of the corner that resizes a box
const MIN_SIZE = 0.02; // smallest box side, normalised

const state = {
  info: null,
  boxes: [], // {phrase, category, bbox: [x0, y0, x1, y1]} normalised
  selected: -1,
  drag: null, // {mode: "new"|"move"|"resize", index, start: [x, y], orig: bbox}
  job: null, // the current job's view
  image: null, // the finished job's image (HTMLImageElement)
  attention: null,
  pollTimer: null,
};

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

function color(i) { return COLORS[i % COLORS.length]; }
function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }

function showError(message) {
  const el = $("error");
  el.textContent = message || "";
  el.hidden = !message;
}

async function api(method, url, body) {
  const opts = { method, headers: {} };
  // The server takes only JSON on requests that change something (no cross-site forms).
  if (method !== "GET") {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body === undefined ? {} : body);
  }
  let res;
  try {
    res = await fetch(url, opts);
  } catch (e) {
    throw new Error("cannot reach the server: " + e.message);
  }
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    throw new Error((data && data.error) || (res.status + " " + res.statusText));
  }
  return data;
}

// ---- categories ---------------------------------------------------------------------------

function knownCategories() {
  const c = state.info && state.info.model.categories;
  return c && c.names ? c.names : null;
}

function nextCategory() {
  const known = knownCategories();
  if (!known) return "object";
  const used = new Set(state.boxes.map((b) => b.category));
  return known.find((c) => !used.has(c)) || known[0];
}

// ---- drawing the layout canvas ------------------------------------------------------------

function drawGrid(g, w, h, rows, cols) {
  g.strokeStyle = "rgba(0,0,0,0.12)";
  g.lineWidth = 1;
  for (let r = 1; r < rows; r++) {
    const y = Math.round((r * h) / rows) + 0.5;
    g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
  }
  for (let c = 1; c < cols; c++) {
    const x = Math.round((c * w) / cols) + 0.5;
    g.beginPath(); g.moveTo(x, 0); g.lineTo(x, h); g.stroke();
  }
}

function drawBoxes(g, w, h, boxes, selected) {
  boxes.forEach((b, i) => {
    const [x0, y0, x1, y1] = b.bbox;
    g.strokeStyle = color(i);
    g.lineWidth = i === selected ? 3 : 2;
    g.strokeRect(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h);
    g.fillStyle = color(i);
    g.font = "12px sans-serif";
    const label = b.phrase || b.category;
    const tw = g.measureText(label).width + 6;
    g.fillRect(x0 * w, y0 * h, tw, 16);
    g.fillStyle = "#fff";
    g.fillText(label, x0 * w + 3, y0 * h + 12);
    if (i === selected) {
      g.fillStyle = color(i);
      g.fillRect(x1 * w - HANDLE, y1 * h - HANDLE, HANDLE, HANDLE);
    }
  });
}

function redraw() {
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#fafafa";
  ctx.fillRect(0, 0, w, h);
  if (state.info) {
    const [rows, cols] = state.info.model.grid;
    drawGrid(ctx, w, h, rows, cols);
  }
  drawBoxes(ctx, w, h, state.boxes, state.selected);
}

function pointer(ev) {
  const r = canvas.getBoundingClientRect();
  return [clamp((ev.clientX - r.left) / r.width, 0, 1), clamp((ev.clientY - r.top) / r.height, 0, 1)];
}

function hit(p) {
  // Topmost (last drawn) box first; the selected box's resize corner wins.
  const px = HANDLE / canvas.width, py = HANDLE / canvas.height;
  if (state.selected >= 0) {
    const [, , x1, y1] = state.boxes[state.selected].bbox;
    if (p[0] >= x1 - px && p[0] <= x1 + px / 2 && p[1] >= y1 - py && p[1] <= y1 + py / 2) {
      return { index: state.selected, mode: "resize" };
    }
  }
  for (let i = state.boxes.length - 1; i >= 0; i--) {
    const [x0, y0, x1, y1] = state.boxes[i].bbox;
    if (p[0] >= x0 && p[0] <= x1 && p[1] >= y0 && p[1] <= y1) {
      const corner = p[0] >= x1 - px && p[1] >= y1 - py;
      return { index: i, mode: corner ? "resize" : "move" };
    }
  }
  return null;
}

canvas.addEventListener("mousedown", (ev) => {
  ev.preventDefault();
  canvas.focus();
  const p = pointer(ev);
  const h = hit(p);
  if (h) {
    state.selected = h.index;
    state.drag = { mode: h.mode, index: h.index, start: p, orig: state.boxes[h.index].bbox.slice() };
  } else {
    const category = nextCategory();
    state.boxes.push({ phrase: "a " + category, category, bbox: [p[0], p[1], p[0], p[1]] });
    state.selected = state.boxes.length - 1;
    state.drag = { mode: "new", index: state.selected, start: p, orig: null };
  }
  renderBoxList();
  redraw();
});

window.addEventListener("mousemove", (ev) => {
  const d = state.drag;
  if (!d) return;
  const p = pointer(ev);
  const b = state.boxes[d.index];
  if (d.mode === "new") {
    b.bbox = [Math.min(d.start[0], p[0]), Math.min(d.start[1], p[1]),
              Math.max(d.start[0], p[0]), Math.max(d.start[1], p[1])];
  } else if (d.mode === "move") {
    const [x0, y0, x1, y1] = d.orig;
    const dx = clamp(p[0] - d.start[0], -x0, 1 - x1);
    const dy = clamp(p[1] - d.start[1], -y0, 1 - y1);
    b.bbox = [x0 + dx, y0 + dy, x1 + dx, y1 + dy];
  } else {
    const [x0, y0] = d.orig;
    b.bbox = [x0, y0, Math.max(x0 + MIN_SIZE, p[0]), Math.max(y0 + MIN_SIZE, p[1])];
  }
  redraw();
});

window.addEventListener("mouseup", () => {
  const d = state.drag;
  if (!d) return;
  state.drag = null;
  const b = state.boxes[d.index];
  if (d.mode === "new" && (b.bbox[2] - b.bbox[0] < MIN_SIZE || b.bbox[3] - b.bbox[1] < MIN_SIZE)) {
    state.boxes.splice(d.index, 1); // a click, not a drag
    state.selected = -1;
  }
  renderBoxList();
  redraw();
});

canvas.addEventListener("keydown", (ev) => {
  if ((ev.key === "Delete" || ev.key === "Backspace") && state.selected >= 0) {
    state.boxes.splice(state.selected, 1);
    state.selected = -1;
    renderBoxList();
    redraw();
    ev.preventDefault();
  }
});

// ---- the box list -------------------------------------------------------------------------

function renderBoxList() {
  const list = $("boxes");
  list.textContent = "";
  const known = knownCategories();
  state.boxes.forEach((b, i) => {
    const row = document.createElement("div");
    row.className = "box-row" + (i === state.selected ? " selected" : "");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = color(i);
    row.appendChild(sw);
    const phrase = document.createElement("input");
    phrase.type = "text";
    phrase.value = b.phrase;
    phrase.title = "phrase";
    phrase.className = "phrase";
    phrase.addEventListener("input", () => { b.phrase = phrase.value; redraw(); });
    row.appendChild(phrase);
    let cat;
    if (known) {
      cat = document.createElement("select");
      const names = known.includes(b.category) ? known : [b.category].concat(known);
      for (const n of names) {
        const o = document.createElement("option");
        o.value = o.textContent = n;
        cat.appendChild(o);
      }
      cat.value = b.category;
      cat.addEventListener("change", () => { b.category = cat.value; redraw(); });
    } else {
      cat = document.createElement("input");
      cat.type = "text";
      cat.value = b.category;
      cat.addEventListener("input", () => { b.category = cat.value; });
    }
    cat.title = "category";
    cat.className = "category";
    row.appendChild(cat);
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "✕";
    del.title = "delete this box";
    del.addEventListener("click", () => {
      state.boxes.splice(i, 1);
      state.selected = -1;
      renderBoxList();
      redraw();
    });
    row.appendChild(del);
    row.addEventListener("mousedown", () => { if (state.selected !== i) { state.selected = i; redraw(); } });
    list.appendChild(row);
  });
}

// ---- layout JSON --------------------------------------------------------------------------

const round = (v) => Math.round(v * 10000) / 10000;

function layoutJson() {
  const m = state.info.model;
  const layout = {
    prompt: $("prompt").value,
    width: m.width,
    height: m.height,
    seed: Number($("seed").value) || 0,
    objects: state.boxes.map((b) => ({ phrase: b.phrase, category: b.category, bbox: b.bbox.map(round) })),
  };
  const neg = $("negative").value;
  if (neg) layout.negative_prompt = neg;
  return layout;
}

function loadLayout(l) {
  if (!l || !Array.isArray(l.objects)) throw new Error("not a layout: it has no objects list");
  $("prompt").value = l.prompt || "";
  $("negative").value = l.negative_prompt || "";
  if (l.seed !== undefined && l.seed !== null) $("seed").value = l.seed;
  state.boxes = l.objects.map((o) => ({ phrase: o.phrase || "", category: o.category || "", bbox: o.bbox.slice(0, 4).map(Number) }));
  state.selected = -1;
  renderBoxList();
  redraw();
}

$("export").addEventListener("click", () => {
  const blob = new Blob([JSON.stringify(layoutJson(), null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "layout.json";
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
});

$("import").addEventListener("change", (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    try {
      loadLayout(JSON.parse(reader.result));
      showError("");
    } catch (e) {
      showError("cannot import " + file.name + ": " + e.message);
    }
    ev.target.value = "";
  };
  reader.readAsText(file);
});

$("clear").addEventListener("click", () => { state.boxes = []; state.selected = -1; renderBoxList(); redraw(); });
$("dice").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });

// ---- jobs ---------------------------------------------------------------------------------

function setStatus(text, status) {
  $("status").textContent = text;
  $("result").dataset.status = status;
}

$("generate").addEventListener("click", async () => {
  showError("");
  const body = {
    layout: layoutJson(),
    init: $("init").value,
    layout_method: $("layout-method").value,
    steps: Number($("steps").value),
    guidance: Number($("guidance").value),
  };
  try {
    const job = await api("POST", "/api/jobs", body);
    state.job = job;
    state.image = null;
    state.attention = null;
    $("downloads").hidden = true;
    $("attention").hidden = true;
    setStatus("job " + job.id + " queued", "queued");
    poll();
  } catch (e) {
    showError(e.message);
  }
  refreshQueue();
});

$("cancel").addEventListener("click", async () => {
  if (!state.job) return;
  try { await api("POST", "/api/jobs/" + state.job.id + "/cancel"); } catch (e) { showError(e.message); }
});

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("cannot load " + url));
    img.src = url;
  });
}

function drawResult(img) {
  const rc = $("result");
  const g = rc.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, rc.width, rc.height);
  if (img) g.drawImage(img, 0, 0, rc.width, rc.height);
  if ($("show-boxes").checked && state.job) {
    const boxes = state.job.layout.objects.map((o) => ({ phrase: o.phrase, category: o.category, bbox: o.bbox }));
    drawBoxes(g, rc.width, rc.height, boxes, -1);
  }
}

async function poll() {
  clearTimeout(state.pollTimer);
  const job = state.job;
  if (!job) return;
  let view;
  try {
    view = await api("GET", "/api/jobs/" + job.id);
  } catch (e) {
    showError(e.message);
    setStatus("job " + job.id + ": lost", "failed");
    $("cancel").disabled = true;
    return;
  }
  if (!state.job || state.job.id !== view.id) return;
  state.job = view;
  $("cancel").disabled = view.status !== "queued" && view.status !== "running";
  const p = $("progress");
  p.max = Math.max(1, view.steps);
  p.value = view.step;
  $("warnings").textContent = "";
  for (const w of view.warnings) {
    const d = document.createElement("div");
    d.className = "warning";
    d.textContent = "warning: " + w;
    $("warnings").appendChild(d);
  }
  if (view.status === "queued") {
    setStatus("job " + view.id + " queued (position " + (view.position + 1) + ")", "queued");
  } else if (view.status === "running") {
    setStatus("job " + view.id + ": " + view.phase + (view.phase === "denoising" ? " step " + view.step + "/" + view.steps : ""), "running");
    if (view.preview) {
      try { drawResult(await loadImage(view.preview + "?step=" + view.step)); } catch (e) { /* next poll */ }
    }
  } else if (view.status === "done") {
    setStatus("job " + view.id + " done in " + view.elapsed_s.toFixed(1) + " s (" + view.method + ", seed " + view.seed + ")", "loading");
    try {
      state.image = await loadImage(view.image);
      drawResult(state.image);
      $("download-image").href = view.image;
      $("download-image").download = "semi-" + view.id + ".png";
      $("download-latents").href = view.initial_latents;
      $("download-latents").download = "semi-" + view.id + "-initial_latents.npy";
      $("downloads").hidden = false;
      state.attention = await api("GET", view.attention);
      renderAttention();
      $("result").dataset.status = "done";
    } catch (e) {
      showError(e.message);
      $("result").dataset.status = "failed";
    }
    refreshQueue();
    return;
  } else {
    setStatus("job " + view.id + " " + view.status, view.status);
    showError(view.error || ("job " + view.status));
    refreshQueue();
    return;
  }
  state.pollTimer = setTimeout(poll, 250);
}

async function refreshQueue() {
  let data;
  try { data = await api("GET", "/api/jobs"); } catch (e) { return; }
  const ul = $("queue");
  ul.textContent = "";
  for (const j of data.jobs.slice(0, 12)) {
    const li = document.createElement("li");
    let text = "#" + j.id + " " + j.status;
    if (j.status === "queued") text += " (position " + (j.position + 1) + ")";
    if (j.status === "running") text += " " + j.step + "/" + j.steps;
    text += ": " + j.method + ", " + j.prompt;
    li.textContent = text;
    if (j.status === "queued" || j.status === "running") {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "cancel";
      b.addEventListener("click", async () => {
        try { await api("POST", "/api/jobs/" + j.id + "/cancel"); } catch (e) { showError(e.message); }
        refreshQueue();
      });
      li.appendChild(b);
    }
    ul.appendChild(li);
  }
}

// ---- attention maps -----------------------------------------------------------------------

function heatCanvas(rows, cols, values, colorOf) {
  const c = document.createElement("canvas");
  c.width = cols;
  c.height = rows;
  const g = c.getContext("2d");
  const img = g.createImageData(cols, rows);
  for (let i = 0; i < rows * cols; i++) {
    const [r, gg, b] = colorOf(values[i]);
    img.data.set([r, gg, b, 255], i * 4);
  }
  g.putImageData(img, 0, 0);
  return c;
}

function hexRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function renderAttention() {
  const box = $("attention");
  box.textContent = "";
  const a = state.attention;
  box.hidden = !($("show-attention").checked && a);
  if (!a) return;
  const [rows, cols] = a.grid;
  const cats = state.job.layout.objects.map((o) => o.category);
  const catColor = (name) => { const i = cats.indexOf(name); return i < 0 ? "#888888" : color(i); };
  for (const m of a.maps) {
    const fig = document.createElement("figure");
    if (m.values) {
      const rgb = hexRgb(catColor(m.category));
      fig.appendChild(heatCanvas(rows, cols, m.values, (v) => rgb.map((c) => Math.round(255 - v * (255 - c)))));
    }
    const cap = document.createElement("figcaption");
    cap.textContent = m.values ? "attention: " + m.category : m.note;
    fig.appendChild(cap);
    box.appendChild(fig);
  }
  if (a.cells) {
    const [cr, cc] = a.cells.grid;
    const fig = document.createElement("figure");
    fig.appendChild(heatCanvas(cr, cc, a.cells.owners, (o) => (o === "background" || o === null) ? [230, 230, 230] : hexRgb(catColor(o))));
    const cap = document.createElement("figcaption");
    cap.textContent = "SemI cells (grey: background)";
    fig.appendChild(cap);
    box.appendChild(fig);
  } else {
    const p = document.createElement("figure");
    p.textContent = "no SemI cells: the init is not semi";
    box.appendChild(p);
  }
}

$("show-attention").addEventListener("change", renderAttention);
$("show-boxes").addEventListener("change", () => drawResult(state.image));

// ---- start --------------------------------------------------------------------------------

async function init() {
  try {
    state.info = await api("GET", "/api/info");
  } catch (e) {
    showError(e.message);
    return;
  }
  const m = state.info.model;
  $("model-info").textContent = m.name + " · " + m.width + "×" + m.height + " · ticket grid " + m.grid[0] + "×" + m.grid[1] +
    (m.categories.names ? " · categories: " + m.categories.names.join(", ") : "");
  $("steps").value = m.default_steps;
  $("steps").max = state.info.limits.max_steps;
  $("guidance").value = m.default_guidance;
  for (const [id, words] of [["init", state.info.inits], ["layout-method", state.info.layout_methods]]) {
    for (const w of words) {
      const o = document.createElement("option");
      o.value = o.textContent = w;
      $(id).appendChild(o);
    }
  }
  redraw();
  refreshQueue();
  setInterval(refreshQueue, 3000);
}

redraw();
init();
