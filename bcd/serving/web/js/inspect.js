// Click-to-inspect: one tile's scores, the tile as the model saw it, and its Grad-CAM.

import { objectUrl, request } from "./api.js";
import { fillFacts } from "./slides.js";

let current = 0;

function probability(value) {
  return value === null || value === undefined ? "n/a" : Number(value).toFixed(3);
}

export function tileFacts(tile) {
  const facts = [["Tile", `row ${tile.row}, column ${tile.col}`]];
  if (!tile.tissue) {
    facts.push(["Scored", "no: background, not analysed"]);
  } else {
    facts.push(
      ["IDC probability (map)", probability(tile.probability)],
      ["IDC probability (tile alone)", probability(tile.tile_probability)],
      ["Decision", `${tile.idc ? "IDC" : "no IDC"} at threshold ${Number(tile.threshold).toFixed(2)}`],
    );
  }
  if (tile.truth !== null) facts.push(["Ground truth", tile.truth === 1 ? "IDC" : "no IDC"]);
  facts.push(["Level-0 box", `x ${tile.x}, y ${tile.y}, ${tile.width} × ${tile.height} px`]);
  return facts;
}

function revoke(image) {
  if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  image.removeAttribute("src");
}

// Show tile (row, col) of analysis `id` in the inspect panel.
export async function inspectTile(id, row, col, { facts, tileImage, gradcam, gradcamMessage, body, hint }) {
  const token = ++current;
  const tile = await request("GET", `/slides/${id}/tiles/${row}/${col}.json`);
  if (token !== current) return;
  hint.hidden = true;
  body.hidden = false;
  fillFacts(facts, tileFacts(tile));
  revoke(tileImage);
  revoke(gradcam);
  gradcam.hidden = true;
  gradcamMessage.hidden = false;
  gradcamMessage.textContent = tile.tissue ? "Computing the Grad-CAM explanation…" : "Explanation unavailable: the tile is background and was not scored.";
  const picture = objectUrl(`/slides/${id}/tiles/${row}/${col}.png`).then((url) => {
    if (token === current) tileImage.src = url;
  });
  if (!tile.tissue) return picture;
  try {
    const url = await objectUrl(`/slides/${id}/explanations/${row}/${col}.png`);
    if (token !== current) return picture;
    gradcam.src = url;
    gradcam.hidden = false;
    gradcamMessage.hidden = true;
  } catch (error) {
    if (token !== current) return picture;
    gradcamMessage.textContent = `Explanation unavailable: ${error.message}`;
  }
  return picture;
}
