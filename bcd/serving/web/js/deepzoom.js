// The deep-zoom viewer: the slide's DZI pyramid in OpenSeadragon (served from vendor/),
// with the heatmap and the ground truth as DZI layers on top, and click-to-inspect.

import { apiKey } from "./api.js";

// Whether the vendored OpenSeadragon loaded (index.html includes it before the app).
export function deepZoomAvailable() {
  return typeof window.OpenSeadragon === "function";
}

function ajaxHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

export class DeepZoomViewer {
  // element: the viewer's container; onInspect(row, col): a tile was clicked.
  constructor(element, onInspect) {
    this.element = element;
    this.onInspect = onInspect;
    this.viewer = null;
    this.facts = null;
    this.opacity = 0.6;
    this.threshold = 0;
    this.truthShown = false;
    this.layers = { overlay: null, truth: null };
    // Bumped at every change of a layer, so a late-loading stale layer is dropped.
    this.generations = { overlay: 0, truth: 0 };
    this.marker = null;
  }

  // facts: GET /slides/{id}/viewer (sizes, grid, layer URLs). Resolves once the slide shows.
  open(facts) {
    this.close();
    this.facts = facts;
    const OpenSeadragon = window.OpenSeadragon;
    this.viewer = OpenSeadragon({
      element: this.element,
      prefixUrl: "vendor/openseadragon/images/",
      tileSources: facts.slide,
      loadTilesWithAjax: true,
      ajaxHeaders: ajaxHeaders(),
      drawer: "canvas",
      showNavigationControl: false,
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      maxZoomPixelRatio: 2,
      visibilityRatio: 0.5,
      gestureSettingsMouse: { clickToZoom: false },
      gestureSettingsTouch: { clickToZoom: false },
    });
    this.viewer.addHandler("canvas-click", (event) => {
      if (!event.quick) return;
      this.inspectAt(event.position);
    });
    return new Promise((resolve, reject) => {
      this.viewer.addOnceHandler("open", () => {
        this.addLayer("overlay");
        if (this.truthShown && facts.truth) this.addLayer("truth");
        resolve();
      });
      this.viewer.addOnceHandler("open-failed", (event) => reject(new Error(`The slide could not be opened: ${event.message}`)));
    });
  }

  close() {
    if (this.viewer) this.viewer.destroy();
    this.viewer = null;
    this.layers = { overlay: null, truth: null };
    this.marker = null;
  }

  layerUrl(name) {
    if (name === "overlay" && this.threshold > 0) return `${this.facts.overlay}?threshold=${this.threshold.toFixed(2)}`;
    return this.facts[name];
  }

  addLayer(name) {
    const url = this.layerUrl(name);
    if (!this.viewer || !url) return;
    const generation = ++this.generations[name];
    this.viewer.addTiledImage({
      tileSource: url,
      opacity: this.opacity,
      // The overlay sits just above the slide; the truth above both.
      index: name === "overlay" ? 1 : undefined,
      success: (event) => {
        if (generation !== this.generations[name]) {
          this.viewer.world.removeItem(event.item);
          return;
        }
        this.layers[name] = event.item;
      },
    });
  }

  removeLayer(name) {
    this.generations[name] += 1;
    if (this.viewer && this.layers[name]) this.viewer.world.removeItem(this.layers[name]);
    this.layers[name] = null;
  }

  setOpacity(value) {
    this.opacity = value;
    for (const item of Object.values(this.layers)) if (item) item.setOpacity(value);
  }

  // Hide the heatmap's tiles whose probability is below `value` (0 shows every scored tile).
  setThreshold(value) {
    this.threshold = value;
    if (this.viewer && this.facts) {
      this.removeLayer("overlay");
      this.addLayer("overlay");
    }
  }

  showTruth(shown) {
    this.truthShown = shown;
    if (!this.viewer || !this.facts || !this.facts.truth) return;
    if (shown) this.addLayer("truth");
    else this.removeLayer("truth");
  }

  get slideImage() {
    return this.viewer ? this.viewer.world.getItemAt(0) : null;
  }

  zoomBy(factor) {
    if (!this.viewer) return;
    this.viewer.viewport.zoomBy(factor);
    this.viewer.viewport.applyConstraints();
  }

  fit() {
    if (this.viewer) this.viewer.viewport.goHome();
  }

  // One screen pixel per slide pixel, around the current centre.
  fullResolution() {
    const image = this.slideImage;
    if (!image) return;
    this.viewer.viewport.zoomTo(image.imageToViewportZoom(window.devicePixelRatio || 1));
  }

  // Centre on a rectangle given in level-0 pixels and outline it.
  focus(x, y, width, height) {
    const image = this.slideImage;
    if (!image) return;
    const box = image.imageToViewportRectangle(x, y, width, height);
    this.mark(box);
    const margin = Math.max(box.width, box.height) * 3.5;
    this.viewer.viewport.fitBounds(
      new window.OpenSeadragon.Rect(box.x - margin, box.y - margin, box.width + 2 * margin, box.height + 2 * margin),
    );
  }

  mark(box) {
    if (this.marker) this.viewer.removeOverlay(this.marker);
    this.marker = document.createElement("div");
    this.marker.className = "tile-marker";
    this.viewer.addOverlay({ element: this.marker, location: box });
  }

  // A click on the slide: which grid tile is under it (level-0 pixels → grid cell).
  inspectAt(position) {
    const image = this.slideImage;
    if (!image || !this.facts) return;
    const point = image.viewerElementToImageCoordinates(position);
    const { rows, cols, cell } = this.facts.grid;
    const row = Math.floor(point.y / cell);
    const col = Math.floor(point.x / cell);
    if (row < 0 || col < 0 || row >= rows || col >= cols) return;
    this.mark(image.imageToViewportRectangle(col * cell, row * cell, cell, cell));
    this.onInspect(row, col);
  }
}
