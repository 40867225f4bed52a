// Slide analyses: upload, follow progress, show heatmap, tiles, report; the case list.

import { objectUrl, request, upload } from "./api.js";

const CASES_STORAGE = "bcd.cases";
const POLL_MS = 1000;

export function storedCases() {
  try {
    const ids = JSON.parse(localStorage.getItem(CASES_STORAGE) || "[]");
    return Array.isArray(ids) ? ids.filter((id) => /^[0-9a-f]{32}$/.test(id)) : [];
  } catch (_) {
    return [];
  }
}

function storeCases(ids) {
  localStorage.setItem(CASES_STORAGE, JSON.stringify(ids));
}

export function rememberCase(id) {
  storeCases([id, ...storedCases().filter((known) => known !== id)]);
}

export function forgetCase(id) {
  storeCases(storedCases().filter((known) => known !== id));
}

export async function startAnalysis(file, truth, { threshold, endpoint, context = true }, onUpload) {
  const form = new FormData();
  form.append("slide", file, file.name);
  if (truth) form.append("truth", truth, truth.name);
  // No threshold: the server uses the model's calibrated decision threshold.
  if (threshold !== null) form.append("threshold", String(threshold));
  if (endpoint) form.append("endpoint", endpoint);
  // Without the field the server applies the model's slide context when it has one.
  if (!context) form.append("context", "false");
  const created = await upload("/slides", form, onUpload);
  rememberCase(created.id);
  return created;
}

// Poll until the analysis leaves InProgress; onUpdate gets every intermediate state.
export async function waitForAnalysis(id, onUpdate, isCurrent) {
  for (;;) {
    const described = await request("GET", `/slides/${id}`);
    if (!isCurrent()) return null;
    onUpdate(described);
    if (described.status !== "InProgress") return described;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function percent(value) {
  return value === null || value === undefined ? "n/a" : `${(value * 100).toFixed(1)} %`;
}

function number(value, digits = 3) {
  return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
}

function fillFacts(list, facts) {
  list.replaceChildren();
  for (const [term, value] of facts) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
}

// Whether tile scores were combined with their neighbours' (the model's fitted slide context).
function contextText(radius) {
  if (!radius) return "off: every tile scored alone";
  const side = 2 * radius + 1;
  return `on: each tile combined with its neighbours (windows up to ${side} × ${side} tiles)`;
}

export function summaryFacts(report) {
  const region = report.largest_region;
  const facts = [
    ["IDC-positive tissue", percent(report.idc_positive_fraction)],
    ["Tissue analysed", `${report.tiles.tissue} tiles (${number(report.tissue_area_mm2, 2)} mm²)`],
    ["IDC-positive area", `${report.tiles.idc_positive} tiles (${number(report.idc_area_mm2, 2)} mm²)`],
    [
      "Largest IDC region",
      region ? `${region.tiles} tiles, ${number(region.area_mm2, 2)} mm² at x ${region.bbox.x}, y ${region.bbox.y}` : "none",
    ],
    ["Mean IDC probability", number(report.mean_probability)],
    ["Threshold", number(report.analysis.threshold, 2)],
    ["Slide context", contextText(report.analysis.context_radius)],
    ["Slide", `${report.slide.width} × ${report.slide.height} px, ${number(report.slide.mpp, 2)} µm/px (${report.slide.mpp_source})`],
    ["Model", [report.model.endpoint, report.model.model].filter(Boolean).join(" / ") || "n/a"],
    ["Analysis time", `${number(report.timings.seconds, 1)} s`],
  ];
  if (report.ground_truth) facts.splice(1, 0, ["Per-slide AUC", number(report.ground_truth.auc)]);
  for (const note of report.notes || []) facts.push(["Note", note]);
  return facts;
}

const DOWNLOADS = [
  ["report.pdf", "Report (PDF)"],
  ["report.png", "Report (PNG)"],
  ["heatmap.png", "Heatmap (PNG)"],
  ["probabilities.npy", "Probability map (.npy)"],
  ["regions.geojson", "IDC regions (GeoJSON for QuPath)"],
  ["tiles.csv", "Tile scores (CSV)"],
  ["report.json", "Report (JSON)"],
];

async function download(id, name) {
  const url = await objectUrl(`/slides/${id}/${name}?download=true`);
  const link = document.createElement("a");
  link.href = url;
  link.download = `slide-${id.slice(0, 8)}-${name}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function renderDownloads(container, described, onError) {
  container.replaceChildren();
  const names = [...DOWNLOADS];
  if (described.has_truth) names.splice(3, 0, ["comparison.png", "Prediction vs truth (PNG)"]);
  for (const [name, label] of names) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.addEventListener("click", () => download(described.id, name).catch(onError));
    container.append(button);
  }
}

export async function renderGallery(list, described, viewer) {
  list.replaceChildren();
  const buttons = [];
  for (const tile of described.report.top_tiles) {
    // The tile's own score: the gallery is ranked by it (the map may add slide context).
    const own = tile.tile_probability ?? tile.probability;
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-pressed", "false");
    button.setAttribute(
      "aria-label",
      `Tile ${tile.rank}: IDC probability of the tile alone ${own.toFixed(2)} at x ${tile.x}, y ${tile.y}. Show on slide.`,
    );
    const image = document.createElement("img");
    image.alt = "";
    const caption = document.createElement("span");
    caption.textContent = `#${tile.rank} p=${own.toFixed(2)} (${tile.x}, ${tile.y})`;
    button.append(image, caption);
    button.addEventListener("click", () => {
      buttons.forEach((other) => other.setAttribute("aria-pressed", "false"));
      button.setAttribute("aria-pressed", "true");
      viewer.focus(tile.x, tile.y, tile.width, tile.height, tile);
    });
    buttons.push(button);
    item.append(button);
    list.append(item);
  }
  await Promise.all(
    described.report.top_tiles.map(async (tile, index) => {
      buttons[index].querySelector("img").src = await objectUrl(`/slides/${described.id}/tiles/${tile.row}/${tile.col}.png`);
    }),
  );
}

export async function loadViewerImages(id) {
  const [baseUrl, overlayUrl] = await Promise.all([
    objectUrl(`/slides/${id}/thumbnail.jpg`),
    objectUrl(`/slides/${id}/overlay.png`),
  ]);
  const decode = async (url) => {
    const image = new Image();
    image.src = url;
    await image.decode();
    return createImageBitmap(image);
  };
  return Promise.all([decode(baseUrl), decode(overlayUrl)]);
}

export function renderTruth(section, metricsList, image, described) {
  const truth = described.report.ground_truth;
  section.hidden = !truth;
  if (!truth) return Promise.resolve();
  fillFacts(metricsList, [
    ["AUC", number(truth.auc)],
    ["Balanced accuracy", number(truth.balanced_accuracy)],
    ["F1", number(truth.f1)],
    ["Annotated tiles", `${truth.annotated_tiles} (${truth.positives} IDC)`],
    ["Sensitivity", number(truth.sensitivity)],
    ["Specificity", number(truth.specificity)],
    ["Coverage", percent(truth.coverage)],
  ]);
  return objectUrl(`/slides/${described.id}/comparison.png`).then((url) => {
    image.src = url;
  });
}

export { fillFacts };

export async function listCases() {
  const ids = storedCases();
  if (!ids.length) return [];
  const document = await request("GET", "/slides?limit=1000");
  const byId = new Map(document.slides.map((item) => [item.id, item]));
  const known = ids.filter((id) => byId.has(id));
  if (known.length !== ids.length) storeCases(known);
  return known.map((id) => byId.get(id));
}

export async function deleteCase(id) {
  await request("DELETE", `/slides/${id}`, { expect: "response" });
  forgetCase(id);
}
