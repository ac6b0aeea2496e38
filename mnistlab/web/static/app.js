// Draw a digit: pointer strokes on a canvas, sent as PNG to /api/predict while drawing;
// each answer comes with the map of what made it (explain=1).
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d", {willReadFrequently: true});
const digitEl = document.getElementById("digit");
const confidenceEl = document.getElementById("confidence");
const barsEl = document.getElementById("bars");
const statusEl = document.getElementById("status");
const uploadEl = document.getElementById("upload");
const heatEl = document.getElementById("heat");
const heatCtx = heatEl.getContext("2d");

// MNIST strokes are about 1/7 of the digit's height; a digit drawn across most
// of the canvas with this width shrinks to a similar-looking 28x28 image.
const LINE_WIDTH = pad.width / 12;
const INTERVAL_MS = 80; // at most ~12 predictions a second while drawing
// The drawing is sent at half size: a digit drawn across the canvas still spans
// ~100 px, five times the 20 px box it is fitted into, and the server decodes
// and preprocesses a quarter of the pixels.
const SEND_SIDE = pad.width / 2;
const outgoing = document.createElement("canvas");
outgoing.width = outgoing.height = SEND_SIDE;
const outgoingCtx = outgoing.getContext("2d");
outgoingCtx.imageSmoothingQuality = "high";

let drawing = false;
let strokeBase = null; // the canvas before the current stroke
let strokePoints = [];
let inked = false;
let showingUpload = false;
let generation = 0; // bumped by clear/upload so that late answers for old drawings are dropped
let busy = false;
let dirty = false;
let timer = null;
let lastSent = 0;

const bars = [];
for (let d = 0; d < 10; d++) {
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.innerHTML = '<span class="pct"></span><div class="fill"></div><span class="label">' + d + "</span>";
  barsEl.appendChild(bar);
  bars.push(bar);
}

function blank() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  showingUpload = false;
}

function clearAll() {
  generation++;
  dirty = false;
  blank();
  show(null);
  setStatus("");
}

function setStatus(text, isError) {
  statusEl.textContent = text;
  statusEl.classList.toggle("error", Boolean(isError));
}

function show(result) {
  showHeat(result);
  const p = result ? result.probabilities : [];
  digitEl.textContent = result ? String(result.digit) : "–";
  confidenceEl.textContent = result ? (100 * p[result.digit]).toFixed(1) + "% sure" : "draw to start";
  bars.forEach((bar, d) => {
    const value = p[d] || 0;
    bar.querySelector(".fill").style.height = (100 * value).toFixed(1) + "%";
    bar.querySelector(".pct").textContent = result && value >= 0.005 ? Math.round(100 * value) + "%" : "";
    bar.classList.toggle("top", Boolean(result) && d === result.digit);
  });
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return {x: (event.clientX - box.left) * pad.width / box.width,
          y: (event.clientY - box.top) * pad.height / box.height};
}

// The current stroke is redrawn whole, as one smooth path, on each move:
// stroking it piece by piece would leave beads where the pieces overlap.
function drawStroke() {
  const p = strokePoints;
  ctx.putImageData(strokeBase, 0, 0);
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = LINE_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(p[0].x, p[0].y);
  for (let i = 1; i < p.length - 1; i++) { // through the midpoints, with the points as controls
    ctx.quadraticCurveTo(p[i].x, p[i].y, (p[i].x + p[i + 1].x) / 2, (p[i].y + p[i + 1].y) / 2);
  }
  const end = p[p.length - 1];
  ctx.lineTo(end.x + (p.length === 1 ? 0.01 : 0), end.y); // a tap leaves a dot
  ctx.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  if (showingUpload) clearAll();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  strokeBase = ctx.getImageData(0, 0, pad.width, pad.height);
  strokePoints = [point(event)];
  drawStroke();
  inked = true;
  schedule();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of (events.length ? events : [event])) strokePoints.push(point(e));
  drawStroke();
  schedule();
});

for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    schedule();
  });
}

// Throttle: one request in flight at a time, at most one per INTERVAL_MS; the
// last stroke is always sent once the one in flight has answered.
function schedule() {
  dirty = true;
  if (busy || timer) return;
  timer = setTimeout(send, Math.max(0, lastSent + INTERVAL_MS - performance.now()));
}

async function send() {
  timer = null;
  if (!dirty || !inked) return;
  dirty = false;
  busy = true;
  lastSent = performance.now();
  const mine = generation;
  try {
    outgoingCtx.drawImage(pad, 0, 0, SEND_SIDE, SEND_SIDE);
    const blob = await new Promise((resolve) => outgoing.toBlob(resolve, "image/png"));
    const answer = await post(blob); // fetch takes the Content-Type from the blob: image/png
    if (mine === generation) answered(answer);
    if (mine === generation && answer.retryAfter) {
      // The server is busy (503): send the drawing again once it said to, not sooner.
      dirty = true;
      lastSent = performance.now() + answer.retryAfter * 1000 - INTERVAL_MS;
    }
  } finally {
    busy = false;
    if (dirty) schedule();
  }
}

// The 28x28 integrated-gradients map over the digit as the model saw it (grey ink on white): red
// pixels raised the answer's probability, blue ones lowered it, on one scale symmetric about zero
// (the largest magnitude is full colour).
function showHeat(result) {
  const map = result && result.explanation;
  const image = heatCtx.createImageData(28, 28);
  const top = map ? Math.max(1e-12, ...map.flat().map(Math.abs)) : 1;
  for (let i = 0; i < 28 * 28; i++) {
    const [row, col] = [Math.floor(i / 28), i % 28];
    const v = map ? map[row][col] / top : 0;
    const a = Math.min(1, Math.abs(v));
    const grey = 255 - 110 * (map ? result.image[row][col] : 0); // the ink, faint under the colours
    const colour = v > 0 ? [255, 255 * (1 - a), 255 * (1 - a)] : [255 * (1 - a), 255 * (1 - a), 255];
    image.data.set([...colour.map((c) => Math.round(a * c + (1 - a) * grey)), 255], 4 * i);
  }
  heatCtx.putImageData(image, 0, 0);
  heatEl.dataset.shown = map ? "1" : "";
}

async function post(body) {
  try {
    const response = await fetch("/api/predict?explain=1", {method: "POST", body: body});
    // Errors from the server's outer layers (Host check, connection limit) are plain text.
    const data = await response.json().catch(() => ({}));
    if (response.ok) return {result: data};
    const retryAfter = response.status === 503 ? Number(response.headers.get("Retry-After")) || 1 : 0;
    return {error: data.error || response.status + " " + response.statusText, retryAfter: retryAfter};
  } catch (err) {
    return {error: "cannot reach the server (" + err.message + ")"};
  }
}

function answered(answer) {
  if (answer.error) {
    setStatus(answer.error, true);
  } else {
    show(answer.result);
    if (!showingUpload) setStatus("");
  }
}

async function uploadFile(file) {
  clearAll();
  showingUpload = true;
  setStatus("from " + file.name);
  preview(file);
  const form = new FormData();
  form.append("file", file);
  const mine = generation;
  const answer = await post(form);
  if (mine === generation) answered(answer);
}

// Show the uploaded picture on the pad, fitted inside it; browsers that cannot
// decode it (TIFF, say) just leave the pad blank: the server still reads it.
function preview(file) {
  const url = URL.createObjectURL(file);
  const img = new Image();
  const mine = generation;
  img.onload = () => {
    if (mine === generation) {
      const scale = Math.min(pad.width / img.width, pad.height / img.height);
      const w = img.width * scale;
      const h = img.height * scale;
      ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    }
    URL.revokeObjectURL(url);
  };
  img.onerror = () => URL.revokeObjectURL(url);
  img.src = url;
}

uploadEl.addEventListener("change", () => {
  const file = uploadEl.files[0];
  uploadEl.value = ""; // choosing the same file again still fires "change"
  if (file) uploadFile(file);
});
pad.addEventListener("dragover", (event) => event.preventDefault());
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) uploadFile(file);
});
document.getElementById("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") clearAll();
});

async function describeModel() {
  const footer = document.getElementById("model");
  try {
    const info = await (await fetch("/api/model")).json();
    const file = info.file ? " · " + info.file.split(/[\\/]/).slice(-2).join("/") : "";
    footer.textContent = "Model " + info.name + " · " + info.params.toLocaleString() + " parameters" + file + " · ";
  } catch (err) {
    footer.textContent = "";
  }
  const docs = document.createElement("a");
  docs.href = "/docs";
  docs.textContent = "API";
  footer.appendChild(docs);
}

blank();
show(null);
describeModel();
