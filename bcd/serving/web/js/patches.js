// Patch classification: send patches to the scoring route, show bars and decisions.

import { ApiError, request } from "./api.js";

const CHUNK = 32;

function scoringUrl(endpoint) {
  return endpoint ? `/endpoints/${encodeURIComponent(endpoint)}/invocations` : "/predict-breast-cancer";
}

async function score(files, endpoint, variant) {
  const form = new FormData();
  files.forEach((file, index) => form.append(`image${index}`, file, file.name));
  const headers = { Accept: "application/json" };
  if (variant) headers["X-Target-Variant"] = variant;
  const document = await request("POST", scoringUrl(endpoint), { body: form, headers });
  const predictions = document.predictions || [document];
  if (predictions.length !== files.length) {
    throw new ApiError(500, "bad_response", "The server returned a different number of predictions.");
  }
  return predictions.map((prediction) => ({
    probability: prediction.probabilities[1],
    model: document.model,
    variant: document.variant,
    threshold: document.threshold,
  }));
}

// Errors that concern every file (no server, no key, no endpoint), not one file.
function isFatal(error) {
  return [0, 401, 403, 404, 503, 504].includes(error.status);
}

// Score files in chunks on the endpoint's variant (empty: the endpoint's own choice);
// a chunk that fails is retried file by file so one corrupt file only marks itself.
export async function classifyPatches(files, endpoint, variant, onProgress) {
  const results = files.map((file) => ({ file, url: URL.createObjectURL(file), probability: null, error: null }));
  for (let start = 0; start < files.length; start += CHUNK) {
    const chunk = results.slice(start, start + CHUNK);
    try {
      const scored = await score(chunk.map((item) => item.file), endpoint, variant);
      scored.forEach((value, index) => Object.assign(chunk[index], value));
    } catch (error) {
      if (isFatal(error)) throw error;
      if (chunk.length === 1) {
        chunk[0].error = error.message;
      } else {
        for (const item of chunk) {
          try {
            Object.assign(item, (await score([item.file], endpoint, variant))[0]);
          } catch (single) {
            if (isFatal(single)) throw single;
            item.error = single.message;
          }
        }
      }
    }
    if (onProgress) onProgress(Math.min(start + CHUNK, files.length), files.length);
  }
  return results;
}

export function renderPatches(results, threshold, tbody, summary) {
  tbody.replaceChildren();
  let positives = 0;
  let failed = 0;
  for (const result of results) {
    const row = document.createElement("tr");
    const imageCell = document.createElement("td");
    const image = document.createElement("img");
    image.alt = `Patch ${result.file.name}`;
    image.addEventListener("error", () => {
      const missing = document.createElement("span");
      missing.className = "hint";
      missing.textContent = "no preview";
      image.replaceWith(missing);
    });
    image.src = result.url;
    imageCell.append(image);
    const nameCell = document.createElement("td");
    nameCell.className = "file-name";
    nameCell.textContent = result.file.name;
    const barCell = document.createElement("td");
    const decisionCell = document.createElement("td");
    const decision = document.createElement("span");
    decision.className = "decision";
    if (result.error) {
      failed += 1;
      barCell.textContent = "—";
      decision.classList.add("failed");
      decision.textContent = `Could not be analysed: ${result.error}`;
    } else {
      const probability = result.probability;
      const wrap = document.createElement("div");
      wrap.className = "bar-cell";
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "1");
      bar.setAttribute("aria-valuenow", probability.toFixed(3));
      bar.setAttribute("aria-label", `IDC probability of ${result.file.name}`);
      const fill = document.createElement("span");
      fill.style.width = `${(probability * 100).toFixed(1)}%`;
      bar.append(fill);
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = probability.toFixed(3);
      wrap.append(bar, label);
      barCell.append(wrap);
      const detected = probability >= threshold;
      if (detected) positives += 1;
      decision.classList.add(detected ? "idc" : "no-idc");
      decision.textContent = detected ? "Cancer detected" : "Cancer not detected";
    }
    decisionCell.append(decision);
    row.append(imageCell, nameCell, barCell, decisionCell);
    tbody.append(row);
  }
  const scored = results.length - failed;
  summary.textContent =
    `${scored} of ${results.length} patches analysed${answeredBy(results)}; ` +
    `${positives} called IDC at threshold ${threshold.toFixed(2)}` +
    (failed ? `; ${failed} could not be analysed.` : ".");
}

// " by variant V (model M)" for the variant(s) that answered, as the server named them.
function answeredBy(results) {
  const seen = new Map();
  for (const result of results) {
    if (!result.error && result.variant) seen.set(result.variant, result.model);
  }
  if (!seen.size) return "";
  const names = [...seen].map(([variant, model]) => `${variant} (model ${model})`);
  return ` by variant ${names.join(", ")}`;
}
