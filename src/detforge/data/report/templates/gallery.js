// detforge report pages: every .gallery draws its items from the JSON block it names, one
// page at a time, sorted and filtered in the browser. Text from the data (file names, class
// names, messages) is only ever set as textContent, never parsed as markup.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, text, ns) {
    const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function colour(k) {
    return "hsl(" + Math.round(((k * 0.618034) % 1) * 360) + ", 85%, 48%)";
  }

  function rect(b, cls, stroke) {
    return el("rect", {
      x: b[0], y: b[1], width: Math.max(b[2] - b[0], 0.5), height: Math.max(b[3] - b[1], 0.5),
      class: cls, stroke: stroke,
    }, undefined, SVG);
  }

  // Sort keys the data leaves out (the page stays small): errors, box counts, smallest box.
  function derive(it) {
    if (it.fp !== undefined) {
      it.err = it.fp + it.fn;
      it.bad = it.err > 0;
    }
    if (it.g && it.kind === undefined) {
      it.boxes = it.g.length;
      it.few = -it.g.length;
      let small = 1;
      for (const b of it.g) small = Math.min(small, Math.sqrt(Math.max(b[2] - b[0], 0) *
        Math.max(b[3] - b[1], 0) / (it.w * it.h)));
      it.small = -small;
    }
  }

  class Gallery {
    constructor(root) {
      this.root = root;
      const cfg = JSON.parse(document.getElementById(root.dataset.source).textContent);
      this.cfg = cfg;
      this.items = cfg.items;
      this.items.forEach((it, i) => { it.i = i; it.cls = this.classesOf(it); derive(it); });
      this.page = 0;
      this.size = cfg.page_size || 48;
      this.grid = root.querySelector("[data-role=grid]");
      this.status = root.querySelector("[data-role=status]");
      this.controls();
      this.render();
    }

    classesOf(it) {
      const s = new Set();
      for (const b of it.g || []) s.add(b[4]);
      for (const b of it.p || []) s.add(b[4]);
      if (it.y !== undefined) s.add(it.y);
      if (it.top && it.top.length) s.add(it.top[0][0]);
      return s;
    }

    controls() {
      const bar = this.root.querySelector("[data-role=controls]");
      this.sort = el("select", { "data-role": "sort", "aria-label": "sort" });
      for (const s of this.cfg.sorts) this.sort.append(el("option", { value: s.key }, s.label));
      this.filter = el("select", { "data-role": "class", "aria-label": "class" });
      this.filter.append(el("option", { value: "" }, "all classes"));
      this.cfg.classes.forEach((c, k) => this.filter.append(el("option", { value: String(k) }, c)));
      if (this.cfg.negatives) this.filter.append(el("option", { value: "neg" }, "negatives (no boxes)"));
      bar.append(el("label", {}, "sort "), this.sort, el("label", {}, " class "), this.filter);
      this.sort.onchange = this.filter.onchange = () => { this.page = 0; this.render(); };
      this.prev = el("button", { "data-role": "prev", type: "button" }, "‹ previous");
      this.next = el("button", { "data-role": "next", type: "button" }, "next ›");
      this.prev.onclick = () => { this.page -= 1; this.render(); };
      this.next.onclick = () => { this.page += 1; this.render(); };
      bar.append(" ", this.prev, this.next, this.status);
    }

    shown() {
      const f = this.filter.value;
      let items = this.items;
      if (f === "neg") items = items.filter((it) => !(it.g || []).length && it.y === undefined);
      else if (f !== "") items = items.filter((it) => it.cls.has(Number(f)));
      const s = this.cfg.sorts.find((x) => x.key === this.sort.value);
      const key = s.key;
      return items.slice().sort((a, b) => {
        const d = key === "name" ? a.n.localeCompare(b.n) : (b[key] || 0) - (a[key] || 0);
        return d || a.i - b.i;
      });
    }

    render() {
      const items = this.shown();
      const pages = Math.max(1, Math.ceil(items.length / this.size));
      this.page = Math.min(Math.max(this.page, 0), pages - 1);
      const part = items.slice(this.page * this.size, (this.page + 1) * this.size);
      this.grid.replaceChildren(...part.map((it) => this.figure(it)));
      this.prev.disabled = this.page === 0;
      this.next.disabled = this.page >= pages - 1;
      this.status.dataset.shown = String(part.length);
      this.status.dataset.total = String(items.length);
      this.status.textContent = items.length + " of " + this.items.length + " images" +
        (pages > 1 ? ", page " + (this.page + 1) + " of " + pages : "");
    }

    figure(it) {
      const fig = el("figure", { class: "item", "data-name": it.n });
      const frame = el("div", { class: "frame", style: "aspect-ratio: " + it.w + " / " + it.h });
      if (it.t) frame.append(el("img", { src: this.cfg.thumbs + it.t + ".jpg", alt: it.n, loading: "lazy" }));
      else frame.append(el("div", { class: "missing" }, it.note || "image could not be read"));
      const svg = el("svg", { viewBox: "0 0 " + it.w + " " + it.h }, undefined, SVG);
      const names = this.cfg.classes;
      const fs = Math.max(it.w, it.h) / 20;  // label size in the thumbnail's own pixels
      for (const b of it.g || []) svg.append(rect(b, it.kind ? "faint" : "gt", "#16a34a"));
      if (it.b) svg.append(rect(it.b, "finding", "#dc2626"));
      for (const b of it.p || []) {
        svg.append(rect(b, "pred", colour(b[4])));
        const t = el("text", {
          x: b[0] + 2, y: Math.max(b[1] - fs / 4, fs), fill: colour(b[4]),
          style: "font-size: " + fs + "px; stroke-width: " + fs / 4 + "px",
        }, names[b[4]] + " " + b[5].toFixed(2), SVG);
        svg.append(t);
      }
      frame.append(svg);
      fig.append(frame, this.caption(it));
      return fig;
    }

    caption(it) {
      const cap = el("figcaption", {});
      cap.append(el("div", { class: "name" }, it.n));
      const names = this.cfg.classes;
      let line = "";
      if (it.kind) line = it.kind + ": " + it.msg;
      else if (it.top) {
        line = "true " + names[it.y] + " · " +
          it.top.map((t) => names[t[0]] + " " + t[1].toFixed(2)).join(", ");
      } else if (it.p) line = "false positives " + it.fp + " · missed " + it.fn;
      else line = (it.g || []).length + " boxes";
      cap.append(el("div", { class: it.bad ? "bad" : "" }, line));
      return cap;
    }
  }

  document.querySelectorAll(".gallery").forEach((g) => new Gallery(g));
})();
