// The pathologists' web app: wiring of upload, patch results, slide viewer and cases.

import { apiKey, request, setApiKey } from "./api.js";
import { DeepZoomViewer, deepZoomAvailable } from "./deepzoom.js";
import { inspectTile } from "./inspect.js";
import { classifyPatches, renderPatches } from "./patches.js";
import {
  deleteCase,
  fillFacts,
  listCases,
  loadViewerImages,
  renderDownloads,
  renderGallery,
  renderTruth,
  startAnalysis,
  summaryFacts,
  waitForAnalysis,
} from "./slides.js";
import { chosenVariant, fillVariantChoice, loadVariants } from "./variants.js";
import { SlideViewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
// A DICOM slide comes as one .dcm or as a .zip of its whole series.
const SLIDE_SUFFIX = /\.(svs|ndpi|mrxs|scn|bif|vms|vmu|svslide|tif|tiff|dcm|zip)$/i;
const PATCH_MAX_SIDE = 64;

const state = {
  patchResults: [],
  // Until the user moves the slider it follows the model's own decision threshold.
  thresholdTouched: false,
  // The endpoint's production variants, for the variant choice beside the threshold.
  variants: { endpoint: "", variants: [], split: false },
  currentCase: null,
  viewToken: 0,
};
let viewer = null;
let deepZoom = null;

// The viewer in use: deep zoom when OpenSeadragon is installed, else the thumbnail canvas.
function activeViewer() {
  return deepZoom || viewer;
}

function inspect(row, col) {
  if (!state.currentCase) return;
  inspectTile(state.currentCase, row, col, {
    facts: $("inspect-facts"),
    tileImage: $("inspect-tile"),
    gradcam: $("inspect-gradcam"),
    gradcamMessage: $("inspect-gradcam-message"),
    body: $("inspect-body"),
    hint: $("inspect-hint"),
  }).catch((error) => showError(error.message));
}

// Gallery selections go to the active viewer and the tile inspector.
const galleryTarget = {
  focus(x, y, width, height, tile) {
    activeViewer().focus(x, y, width, height);
    if (tile) inspect(tile.row, tile.col);
  },
};

async function showSlide(described, token) {
  $("inspect-body").hidden = true;
  $("inspect-hint").hidden = false;
  if (deepZoom) {
    const facts = await request("GET", `/slides/${described.id}/viewer`);
    if (token !== state.viewToken) return;
    $("truth-layer-label").hidden = !facts.truth;
    $("slide-result").hidden = false;
    deepZoom.setOpacity(Number($("opacity").value));
    deepZoom.threshold = Number($("overlay-threshold").value);
    deepZoom.truthShown = $("truth-layer").checked;
    await deepZoom.open(facts);
    return;
  }
  const [base, overlay] = await loadViewerImages(described.id);
  if (token !== state.viewToken) return;
  $("slide-result").hidden = false;
  viewer.setImages(base, overlay, described.report.slide.width);
  viewer.setOpacity(Number($("opacity").value));
}

function threshold() {
  return Number($("threshold").value);
}

function showThreshold() {
  $("threshold-value").textContent = threshold().toFixed(3);
}

// Adopt the threshold the model was calibrated with, unless the user chose one.
function adoptModelThreshold(results) {
  const scored = results.find((result) => typeof result.threshold === "number");
  if (state.thresholdTouched || !scored) return;
  $("threshold").value = String(scored.threshold);
  showThreshold();
}

// Follow the chosen variant's calibrated threshold (known once the server loaded it).
function adoptVariantThreshold() {
  const variant = chosenVariant($("variant"), state.variants);
  if (state.thresholdTouched || !variant || variant.threshold === null) return;
  $("threshold").value = String(variant.threshold);
  showThreshold();
}

// Fill the variant choice from the endpoint's production variants; without access to
// GET /endpoints (no key yet) it stays at "Endpoint default".
async function refreshVariants() {
  try {
    state.variants = await loadVariants(endpoint());
  } catch (_) {
    state.variants = { endpoint: endpoint(), variants: [], split: false };
  }
  fillVariantChoice($("variant"), state.variants);
  adoptVariantThreshold();
}

function endpoint() {
  return $("endpoint").value.trim();
}

function setStatus(message) {
  $("status").textContent = message;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function hideStart() {
  $("start").hidden = true;
}

async function kindOf(file) {
  if (/truth/i.test(file.name) && /\.(npy|png)$/i.test(file.name)) return "truth";
  if (SLIDE_SUFFIX.test(file.name)) return "slide";
  if (/\.npy$/i.test(file.name)) return "patch";
  try {
    const bitmap = await createImageBitmap(file);
    const large = bitmap.width > PATCH_MAX_SIDE || bitmap.height > PATCH_MAX_SIDE;
    bitmap.close();
    return large ? "slide" : "patch";
  } catch (_) {
    // Undecodable here: let the server say what is wrong with it.
    return file.size > 2 * 1024 * 1024 ? "slide" : "patch";
  }
}

async function handleFiles(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  showError("");
  hideStart();
  const kinds = await Promise.all(files.map(kindOf));
  const pick = (kind) => files.filter((_, index) => kinds[index] === kind);
  const patches = pick("patch");
  const slides = pick("slide");
  const truths = pick("truth");
  if (truths.length && !slides.length) {
    showError("A ground-truth file needs its slide: drop the slide and truth.npy (or truth.png) together.");
  }
  if (patches.length) await runPatches(patches);
  for (const [index, slide] of slides.entries()) {
    await runSlide(slide, slides.length === 1 ? truths[0] : truths.find((t) => sameStem(t, slide)), index === 0);
  }
}

function sameStem(truth, slide) {
  const stem = slide.name.replace(/\.[^.]+$/, "");
  return truth.name.startsWith(stem);
}

async function runPatches(files) {
  $("patch-results").hidden = false;
  setStatus(`Analysing ${files.length} patch${files.length > 1 ? "es" : ""}…`);
  try {
    state.patchResults = await classifyPatches(files, endpoint(), $("variant").value, (done, total) =>
      setStatus(`Analysing patches… ${done} of ${total}`),
    );
    adoptModelThreshold(state.patchResults);
    renderPatches(state.patchResults, threshold(), $("patch-rows"), $("patch-summary"));
    const failed = state.patchResults.filter((result) => result.error);
    setStatus(`Analysed ${files.length - failed.length} of ${files.length} patches.`);
    if (failed.length) {
      showError(
        `${failed.length} file${failed.length > 1 ? "s" : ""} could not be analysed:\n` +
          failed.map((result) => `${result.file.name}: ${result.error}`).join("\n"),
      );
    }
  } catch (error) {
    setStatus("");
    showError(error.message);
    if (error.code === "unknown_variant") await refreshVariants();
  }
}

async function runSlide(file, truth, show) {
  const view = $("slide-view");
  view.hidden = false;
  $("slide-result").hidden = true;
  $("slide-progress").hidden = false;
  $("slide-stage").textContent = `Uploading ${file.name}…`;
  $("slide-progress-bar").value = 0;
  setStatus(`Uploading ${file.name}…`);
  try {
    const created = await startAnalysis(file, truth, { threshold: state.thresholdTouched ? threshold() : null, endpoint: endpoint(), context: $("slide-context").checked }, (fraction) => {
      $("slide-progress-bar").value = fraction;
      $("slide-stage").textContent = `Uploading ${file.name}… ${Math.round(fraction * 100)} %`;
    });
    await refreshCases();
    if (show) await openCase(created.id);
  } catch (error) {
    $("slide-progress").hidden = true;
    setStatus("");
    showError(`${file.name}: ${error.message}`);
  }
}

async function openCase(id) {
  const token = ++state.viewToken;
  state.currentCase = id;
  markCurrentCase();
  hideStart();
  showError("");
  $("slide-view").hidden = false;
  $("slide-result").hidden = true;
  $("slide-progress").hidden = false;
  try {
    const described = await waitForAnalysis(
      id,
      (update) => {
        $("slide-stage").textContent = `${update.filename}: ${update.stage} (${Math.round(update.progress * 100)} %)`;
        $("slide-progress-bar").value = update.progress;
        setStatus(`Analysing ${update.filename}…`);
      },
      () => token === state.viewToken,
    );
    if (!described) return;
    $("slide-progress").hidden = true;
    await refreshCases();
    if (described.status === "Failed") {
      setStatus("");
      showError(`The analysis of ${described.filename} failed: ${described.failure_reason}`);
      return;
    }
    await renderResult(described, token);
  } catch (error) {
    if (token !== state.viewToken) return;
    $("slide-progress").hidden = true;
    setStatus("");
    showError(error.message);
  }
}

async function renderResult(described, token) {
  setStatus(`Loading the heatmap of ${described.filename}…`);
  $("slide-title").textContent = `Slide analysis: ${described.filename}`;
  await showSlide(described, token);
  if (token !== state.viewToken) return;
  fillFacts($("slide-summary"), summaryFacts(described.report));
  renderDownloads($("downloads"), described, (error) => showError(error.message));
  await Promise.all([
    renderGallery($("gallery"), described, galleryTarget),
    renderTruth($("truth-section"), $("truth-metrics"), $("comparison"), described),
  ]);
  setStatus(`Analysis of ${described.filename} complete.`);
}

function markCurrentCase() {
  for (const item of $("case-list").children) {
    item.classList.toggle("current", item.dataset.id === state.currentCase);
  }
}

async function refreshCases() {
  let cases;
  try {
    cases = await listCases();
  } catch (error) {
    showError(error.message);
    return;
  }
  const list = $("case-list");
  list.replaceChildren();
  $("cases-empty").hidden = cases.length > 0;
  for (const item of cases) {
    const entry = document.createElement("li");
    entry.dataset.id = item.id;
    const name = document.createElement("div");
    name.className = "case-name";
    name.textContent = item.filename;
    const meta = document.createElement("div");
    meta.className = "case-meta";
    const badge = document.createElement("span");
    badge.className = `badge ${item.status}`;
    badge.textContent = item.status === "InProgress" ? "Running" : item.status;
    const when = new Date(item.created).toLocaleString();
    const auc = item.summary && item.summary.auc !== null && item.summary.auc !== undefined ? ` · AUC ${item.summary.auc.toFixed(3)}` : "";
    meta.append(badge, ` ${when}${auc}`);
    const actions = document.createElement("div");
    actions.className = "case-actions";
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = "Open";
    open.setAttribute("aria-label", `Open analysis of ${item.filename}`);
    open.addEventListener("click", () => openCase(item.id));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "danger";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete analysis of ${item.filename}`);
    remove.addEventListener("click", async () => {
      if (!window.confirm(`Delete the analysis of ${item.filename} from the server?`)) return;
      try {
        await deleteCase(item.id);
        if (state.currentCase === item.id) {
          state.viewToken += 1;
          state.currentCase = null;
          $("slide-view").hidden = true;
        }
        setStatus(`Deleted the analysis of ${item.filename}.`);
        await refreshCases();
      } catch (error) {
        showError(error.message);
      }
    });
    actions.append(open, remove);
    entry.append(name, meta, actions);
    list.append(entry);
  }
  markCurrentCase();
}

function bindUpload() {
  const zone = $("dropzone");
  const input = $("file-input");
  input.addEventListener("change", () => {
    handleFiles(input.files).finally(() => {
      input.value = "";
    });
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    handleFiles(event.dataTransfer.files);
  });
  // Dropping outside the zone must not navigate away from the app.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

function bindControls() {
  const keyInput = $("api-key");
  keyInput.value = apiKey();
  keyInput.addEventListener("change", () => {
    setApiKey(keyInput.value);
    refreshCases();
    refreshVariants();
  });
  const endpointInput = $("endpoint");
  endpointInput.value = localStorage.getItem("bcd.endpoint") || "";
  endpointInput.addEventListener("change", () => {
    localStorage.setItem("bcd.endpoint", endpointInput.value.trim());
    refreshVariants();
  });
  // Another variant is another model: its own threshold, and the shown patches re-scored.
  $("variant").addEventListener("change", () => {
    state.thresholdTouched = false;
    adoptVariantThreshold();
    if (state.patchResults.length) runPatches(state.patchResults.map((result) => result.file));
  });
  $("threshold").addEventListener("input", () => {
    state.thresholdTouched = true;
    showThreshold();
    if (state.patchResults.length) renderPatches(state.patchResults, threshold(), $("patch-rows"), $("patch-summary"));
  });
  $("opacity").addEventListener("input", () => {
    const value = Number($("opacity").value);
    $("opacity-value").textContent = `${Math.round(value * 100)}%`;
    activeViewer().setOpacity(value);
  });
  $("zoom-in").addEventListener("click", () => activeViewer().zoomBy(1.25));
  $("zoom-out").addEventListener("click", () => activeViewer().zoomBy(0.8));
  $("zoom-fit").addEventListener("click", () => activeViewer().fit());
  $("zoom-full").addEventListener("click", () => deepZoom && deepZoom.fullResolution());
  $("overlay-threshold").addEventListener("input", () => {
    $("overlay-threshold-value").textContent = Number($("overlay-threshold").value).toFixed(2);
  });
  $("overlay-threshold").addEventListener("change", () => {
    if (deepZoom) deepZoom.setThreshold(Number($("overlay-threshold").value));
  });
  $("truth-layer").addEventListener("change", () => {
    if (deepZoom) deepZoom.showTruth($("truth-layer").checked);
  });
}

// Deep zoom when the vendored OpenSeadragon loaded; otherwise say so and keep the thumbnail viewer.
function chooseViewer() {
  viewer = new SlideViewer($("viewer"));
  if (deepZoomAvailable()) {
    deepZoom = new DeepZoomViewer($("deepzoom"), inspect);
    $("viewer").hidden = true;
    $("deepzoom").hidden = false;
    for (const id of ["zoom-full", "deepzoom-controls", "overlay-threshold-help"]) $(id).hidden = false;
    return;
  }
  const missing = $("viewer-missing");
  missing.textContent =
    "The deep-zoom viewer is not installed on this server (vendor/openseadragon is missing; " +
    "run `make vendor` where bcd is installed, then restart `bcd serve`). Showing the slide thumbnail instead.";
  missing.hidden = false;
}

function main() {
  chooseViewer();
  bindUpload();
  bindControls();
  refreshCases();
  refreshVariants();
}

main();
