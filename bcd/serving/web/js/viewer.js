// A zoomable, pannable slide view: the thumbnail with the heatmap overlay on a canvas.

export class SlideViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.base = null;
    this.overlay = null;
    this.opacity = 0.6;
    this.scale = 1;
    this.offsetX = 0;
    this.offsetY = 0;
    this.slideWidth = 1;
    this.highlight = null;
    this.drag = null;
    this.bind();
  }

  // base/overlay: ImageBitmaps of the same size; slideWidth: level-0 width in pixels.
  setImages(base, overlay, slideWidth) {
    this.base = base;
    this.overlay = overlay;
    this.slideWidth = slideWidth;
    this.highlight = null;
    this.resize();
    this.fit();
  }

  // Thumbnail pixels per level-0 pixel.
  get factor() {
    return this.base ? this.base.width / this.slideWidth : 1;
  }

  resize() {
    const rect = this.canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(300, Math.round(rect.width * ratio));
    const height = Math.max(200, Math.round(rect.height * ratio));
    if (this.canvas.width === width && this.canvas.height === height) return false;
    this.canvas.width = width;
    this.canvas.height = height;
    return true;
  }

  fit() {
    if (!this.base) return;
    const scale = Math.min(this.canvas.width / this.base.width, this.canvas.height / this.base.height);
    this.scale = scale;
    this.offsetX = (this.canvas.width - this.base.width * scale) / 2;
    this.offsetY = (this.canvas.height - this.base.height * scale) / 2;
    this.draw();
  }

  zoomBy(factor, centreX = this.canvas.width / 2, centreY = this.canvas.height / 2) {
    if (!this.base) return;
    const fitted = Math.min(this.canvas.width / this.base.width, this.canvas.height / this.base.height);
    const scale = Math.min(Math.max(this.scale * factor, fitted * 0.5), 64);
    const applied = scale / this.scale;
    this.offsetX = centreX - (centreX - this.offsetX) * applied;
    this.offsetY = centreY - (centreY - this.offsetY) * applied;
    this.scale = scale;
    this.draw();
  }

  panBy(dx, dy) {
    this.offsetX += dx;
    this.offsetY += dy;
    this.draw();
  }

  // Centre and zoom on a rectangle given in level-0 slide pixels, and outline it.
  focus(x, y, width, height) {
    if (!this.base) return;
    const f = this.factor;
    this.highlight = { x: x * f, y: y * f, width: width * f, height: height * f };
    const target = Math.min(this.canvas.width, this.canvas.height) / (Math.max(this.highlight.width, 1) * 8);
    this.scale = Math.min(Math.max(target, this.scale), 64);
    this.offsetX = this.canvas.width / 2 - (this.highlight.x + this.highlight.width / 2) * this.scale;
    this.offsetY = this.canvas.height / 2 - (this.highlight.y + this.highlight.height / 2) * this.scale;
    this.draw();
  }

  setOpacity(value) {
    this.opacity = value;
    this.draw();
  }

  draw() {
    const context = this.context;
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.base) return;
    context.setTransform(this.scale, 0, 0, this.scale, this.offsetX, this.offsetY);
    context.imageSmoothingEnabled = this.scale < 2;
    context.globalAlpha = 1;
    context.drawImage(this.base, 0, 0);
    if (this.overlay && this.opacity > 0) {
      context.imageSmoothingEnabled = false;
      context.globalAlpha = this.opacity;
      context.drawImage(this.overlay, 0, 0, this.base.width, this.base.height);
      context.globalAlpha = 1;
    }
    if (this.highlight) {
      const h = this.highlight;
      context.lineWidth = 3 / this.scale;
      context.strokeStyle = "#000000";
      context.strokeRect(h.x, h.y, h.width, h.height);
      context.lineWidth = 1.5 / this.scale;
      context.strokeStyle = "#ffffff";
      context.strokeRect(h.x, h.y, h.width, h.height);
    }
  }

  canvasPoint(event) {
    const rect = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) / rect.width) * this.canvas.width,
      y: ((event.clientY - rect.top) / rect.height) * this.canvas.height,
    };
  }

  bind() {
    const canvas = this.canvas;
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      const point = this.canvasPoint(event);
      this.zoomBy(event.deltaY < 0 ? 1.25 : 0.8, point.x, point.y);
    }, { passive: false });
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      this.drag = this.canvasPoint(event);
      canvas.classList.add("panning");
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!this.drag) return;
      const point = this.canvasPoint(event);
      this.panBy(point.x - this.drag.x, point.y - this.drag.y);
      this.drag = point;
    });
    const stop = () => {
      this.drag = null;
      canvas.classList.remove("panning");
    };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("keydown", (event) => {
      const step = 60;
      const actions = {
        "+": () => this.zoomBy(1.25),
        "=": () => this.zoomBy(1.25),
        "-": () => this.zoomBy(0.8),
        "0": () => this.fit(),
        ArrowLeft: () => this.panBy(step, 0),
        ArrowRight: () => this.panBy(-step, 0),
        ArrowUp: () => this.panBy(0, step),
        ArrowDown: () => this.panBy(0, -step),
      };
      const action = actions[event.key];
      if (action) {
        event.preventDefault();
        action();
      }
    });
    window.addEventListener("resize", () => {
      if (this.base && this.resize()) this.fit();
    });
  }
}
