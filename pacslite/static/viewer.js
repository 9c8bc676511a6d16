// pacslite's light image viewer: one series, image by image. Scrolling (wheel, arrow keys,
// slider); dragging with the chosen tool: window/level, pan, zoom, length in millimetres from
// Pixel Spacing; Ctrl + wheel zooms; presets, reset, invert, fit or 1:1; the text on the image
// (patient, exam, series, image number, window, zoom, the CT number under the cursor); the
// header. The server renders every frame (PNG) and gives a frame's values for the cursor; this
// builds the URLs, places the image and draws the measurements. No inline script (CSP).
// A viewer loaded later by htmx (the report page) starts itself on htmx's load event.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var active = null;  // the viewer the keyboard drives (there is one on a page)

  function init(root) {
    if (!root || root.dataset.ready) { return; }
    root.dataset.ready = "1";
    var stack = JSON.parse(root.dataset.stack || "[]");
    var image = root.querySelector("#viewer-image");
    var stage = root.querySelector("#viewer-stage");
    var canvas = root.querySelector("#viewer-canvas");
    var marks = root.querySelector("#viewer-marks");
    var slider = root.querySelector("#viewer-slider");
    var position = root.querySelector("#viewer-position");
    var windowLabel = root.querySelector("#viewer-window");
    var overlayImage = root.querySelector("#overlay-image");
    var overlayWindow = root.querySelector("#overlay-window");
    var overlayZoom = root.querySelector("#overlay-zoom");
    var overlayValue = root.querySelector("#overlay-value");
    var measureLabel = root.querySelector("#viewer-measure");
    var preset = root.querySelector("#viewer-preset");
    var initial = root.dataset.wc !== undefined ? [Number(root.dataset.wc), Number(root.dataset.ww)] : null;
    var state = { index: Math.floor(stack.length / 2), wc: null, ww: null, invert: false, tool: "window",
                  zoom: 1, panX: 0, panY: 0, fit: 1 };
    var measures = {};  // stack index → [{x1, y1, x2, y2}] in image pixels
    var values = {};  // "id:frame" → {rows, columns, data, unit} or "loading" / "none"
    if (initial) { state.wc = initial[0]; state.ww = initial[1]; }

    function url(entry, withWindow) {
      var base = root.dataset.render.replace("/0/", "/" + entry.id + "/");
      var query = "?frame=" + entry.frame;
      if (withWindow && state.wc !== null) {
        query += "&wc=" + Math.round(state.wc) + "&ww=" + Math.max(1, Math.round(state.ww));
      }
      if (state.invert) { query += "&invert=1"; }
      return base + query;
    }

    function size(entry) {  // the image's size in pixels: from the header, else as loaded
      return { w: entry.columns || image.naturalWidth || 1, h: entry.rows || image.naturalHeight || 1 };
    }

    function windowText() {
      return state.wc === null ? "" : "W " + Math.round(state.ww) + " L " + Math.round(state.wc);
    }

    function layout() {  // fit the image in the stage, then apply zoom and pan
      if (!stack.length) { return; }
      var entry = stack[state.index];
      var dims = size(entry);
      var sw = stage.clientWidth, sh = stage.clientHeight;
      state.fit = Math.min(sw / dims.w, sh / dims.h);
      var w = dims.w * state.fit, h = dims.h * state.fit;
      canvas.style.width = w + "px";
      canvas.style.height = h + "px";
      canvas.style.left = (sw - w) / 2 + "px";
      canvas.style.top = (sh - h) / 2 + "px";
      canvas.style.transform = "translate(" + state.panX + "px, " + state.panY + "px) scale(" + state.zoom + ")";
      marks.setAttribute("viewBox", "0 0 " + dims.w + " " + dims.h);
      overlayZoom.textContent = "×" + (state.fit * state.zoom).toFixed(2);
      draw();
    }

    function lengthOf(entry, m) {
      var dx = m.x2 - m.x1, dy = m.y2 - m.y1;
      if (entry.spacing) {
        var mm = Math.sqrt(Math.pow(dx * entry.spacing.column, 2) + Math.pow(dy * entry.spacing.row, 2));
        return mm.toFixed(1) + " " + root.dataset.unitMm;
      }
      return Math.sqrt(dx * dx + dy * dy).toFixed(1) + " " + root.dataset.unitPx;
    }

    function draw() {  // the current image's measurements, in image pixels (they zoom with it)
      while (marks.firstChild) { marks.removeChild(marks.firstChild); }
      var entry = stack[state.index];
      var scale = state.fit * state.zoom || 1;
      (measures[state.index] || []).forEach(function (m) {
        var line = document.createElementNS(SVG, "line");
        line.setAttribute("x1", m.x1); line.setAttribute("y1", m.y1);
        line.setAttribute("x2", m.x2); line.setAttribute("y2", m.y2);
        line.setAttribute("stroke-width", String(2 / scale));
        marks.appendChild(line);
        var text = document.createElementNS(SVG, "text");
        text.setAttribute("x", m.x2 + 6 / scale); text.setAttribute("y", m.y2 - 6 / scale);
        text.setAttribute("font-size", String(14 / scale));
        text.textContent = lengthOf(entry, m);
        marks.appendChild(text);
      });
    }

    function show() {
      if (!stack.length) { return; }
      var entry = stack[state.index];
      image.src = url(entry, true);
      image.dataset.index = String(state.index);
      slider.value = String(state.index);
      var where = (state.index + 1) + " / " + stack.length +
        (entry.frames > 1 ? " (" + (entry.frame + 1) + "/" + entry.frames + ")" : "");
      position.textContent = where;
      overlayImage.textContent = root.dataset.imageWord + " " + entry.number + " · " + where;
      windowLabel.textContent = windowText();
      overlayWindow.textContent = windowText();
      overlayValue.textContent = "";
      for (var step = 1; step <= 3; step += 1) {  // the next images, ready before they are asked for
        var ahead = stack[state.index + step];
        if (ahead) { new Image().src = url(ahead, true); }
      }
      layout();
    }

    function go(delta) {
      var next = Math.min(stack.length - 1, Math.max(0, state.index + delta));
      if (next !== state.index) { state.index = next; show(); }
    }

    function zoomBy(factor) {
      state.zoom = Math.min(40, Math.max(0.1, state.zoom * factor));
      layout();
    }

    function imagePoint(event) {  // the pointer in image pixels, or null outside the image
      var entry = stack[state.index];
      var dims = size(entry);
      var box = image.getBoundingClientRect();
      if (!box.width || !box.height) { return null; }
      var x = (event.clientX - box.left) / box.width * dims.w;
      var y = (event.clientY - box.top) / box.height * dims.h;
      return { x: x, y: y, inside: x >= 0 && y >= 0 && x < dims.w && y < dims.h };
    }

    var pointer = null;  // where the cursor last was: the value shows there once it has arrived

    function showValue(event) {  // the CT number (modality value) under the cursor
      var entry = stack[state.index];
      pointer = { clientX: event.clientX, clientY: event.clientY };
      var point = imagePoint(event);
      if (!point || !point.inside) { overlayValue.textContent = ""; return; }
      var key = entry.id + ":" + entry.frame;
      var found = values[key];
      var x = Math.floor(point.x), y = Math.floor(point.y);
      if (found === undefined) {
        values[key] = "loading";
        fetch(root.dataset.values.replace("/0/", "/" + entry.id + "/") + "?frame=" + entry.frame,
              { credentials: "same-origin" }).then(function (response) {
          if (!response.ok) { values[key] = "none"; return null; }
          return response.arrayBuffer().then(function (buffer) {
            var typed = response.headers.get("X-Type") === "int16" ? new Int16Array(buffer) : new Float32Array(buffer);
            values[key] = { columns: Number(response.headers.get("X-Columns")), data: typed,
                            unit: response.headers.get("X-Unit") || "" };
            var now = stack[state.index];
            if (now && now.id + ":" + now.frame === key && pointer) { showValue(pointer); }
          });
        }).catch(function () { values[key] = "none"; });
        return;
      }
      if (typeof found !== "object") { overlayValue.textContent = ""; return; }
      var value = found.data[y * found.columns + x];
      if (value === undefined) { overlayValue.textContent = ""; return; }
      var shown = Number.isInteger(value) ? String(value) : value.toFixed(1);
      overlayValue.textContent = (found.unit ? found.unit + " " : "") + shown + " (" + x + ", " + y + ")";
      overlayValue.dataset.value = String(value);
    }

    function setTool(tool) {
      state.tool = tool;
      root.querySelectorAll("[data-tool]").forEach(function (button) {
        button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
      });
    }

    slider.max = String(Math.max(stack.length - 1, 0));
    slider.addEventListener("input", function () { state.index = Number(slider.value); show(); });
    stage.addEventListener("wheel", function (event) {
      event.preventDefault();
      if (event.ctrlKey) { zoomBy(event.deltaY > 0 ? 1 / 1.15 : 1.15); } else { go(event.deltaY > 0 ? 1 : -1); }
    }, { passive: false });
    image.addEventListener("load", layout);
    window.addEventListener("resize", layout);
    stage.addEventListener("pointerenter", function () { active = api; });
    stage.addEventListener("pointerleave", function () { pointer = null; overlayValue.textContent = ""; });

    var drag = null;
    stage.addEventListener("pointerdown", function (event) {
      active = api;
      var start = { x: event.clientX, y: event.clientY, wc: state.wc, ww: state.ww, panX: state.panX,
                    panY: state.panY, zoom: state.zoom };
      if (state.tool === "window" && state.wc === null) { return; }  // a colour image has no window
      if (state.tool === "length") {
        var point = imagePoint(event);
        if (!point || !point.inside) { return; }
        start.measure = { x1: point.x, y1: point.y, x2: point.x, y2: point.y };
        (measures[state.index] = measures[state.index] || []).push(start.measure);
      }
      drag = start;
      stage.setPointerCapture(event.pointerId);
    });
    stage.addEventListener("pointermove", function (event) {
      showValue(event);
      if (!drag) { return; }
      var dx = event.clientX - drag.x, dy = event.clientY - drag.y;
      if (state.tool === "window") {
        var scale = Math.max(drag.ww / 256, 1);
        state.ww = Math.max(1, drag.ww + dx * scale);
        state.wc = drag.wc + dy * scale;
        windowLabel.textContent = windowText();
        overlayWindow.textContent = windowText();
      } else if (state.tool === "pan") {
        state.panX = drag.panX + dx; state.panY = drag.panY + dy; layout();
      } else if (state.tool === "zoom") {
        state.zoom = Math.min(40, Math.max(0.1, drag.zoom * Math.exp(-dy / 150))); layout();
      } else if (state.tool === "length" && drag.measure) {
        var point = imagePoint(event);
        if (point) { drag.measure.x2 = point.x; drag.measure.y2 = point.y; draw(); }
      }
    });
    stage.addEventListener("pointerup", function () {
      if (!drag) { return; }
      var finished = drag;
      drag = null;
      if (state.tool === "window") { if (preset) { preset.value = ""; } show(); }
      if (state.tool === "length" && finished.measure) {
        measureLabel.textContent = lengthOf(stack[state.index], finished.measure);
      }
    });

    if (preset) {
      preset.addEventListener("change", function () {
        if (preset.value) {
          var parts = preset.value.split(",");
          state.wc = Number(parts[0]); state.ww = Number(parts[1]);
        } else if (initial) {
          state.wc = initial[0]; state.ww = initial[1];
        }
        show();
      });
    }

    root.addEventListener("click", function (event) {
      var tool = event.target.closest("[data-tool]");
      if (tool) { setTool(tool.dataset.tool); return; }
      var button = event.target.closest("[data-action]");
      if (!button) { return; }
      var action = button.dataset.action;
      if (action === "prev") { go(-1); }
      if (action === "next") { go(1); }
      if (action === "reset") {
        state.wc = initial ? initial[0] : null; state.ww = initial ? initial[1] : null; state.invert = false;
        state.zoom = 1; state.panX = 0; state.panY = 0;
        if (preset) { preset.value = ""; }
        show();
      }
      if (action === "invert") {
        state.invert = !state.invert;
        button.setAttribute("aria-pressed", String(state.invert));
        show();
      }
      if (action === "zoom") {  // 1:1 (one image pixel, one screen pixel), or back to fit
        var actual = Math.abs(state.fit * state.zoom - 1) < 0.001;
        state.zoom = actual ? 1 : 1 / state.fit;
        state.panX = 0; state.panY = 0;
        button.setAttribute("aria-pressed", String(!actual));
        layout();
      }
      if (action === "clear") { measures = {}; measureLabel.textContent = ""; draw(); }
      if (action === "key") {  // the image shown, in the window shown, as a key image of the report
        var shown = stack[state.index], note = root.querySelector("#key-note"), status = root.querySelector("#key-status");
        var body = new URLSearchParams({ frame: String(shown.frame), note: note ? note.value : "",
                                         center: state.wc === null ? "" : String(Math.round(state.wc)),
                                         width: state.ww === null ? "" : String(Math.max(1, Math.round(state.ww))) });
        var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
        fetch(button.dataset.keyUrl.replace("/0/", "/" + shown.id + "/"), { method: "POST", body: body,
              headers: headers, credentials: "same-origin" }).then(function (response) {
          return response.text().then(function (text) {
            status.textContent = text;
            if (response.ok) {
              if (note) { note.value = ""; }
              document.body.dispatchEvent(new CustomEvent("key-images-changed", { bubbles: true }));
            }
          });
        });
      }
      if (action === "header" && window.htmx) {
        var entry = stack[state.index];
        window.htmx.ajax("GET", root.dataset.header.replace("/0/", "/" + entry.id + "/"),
                         { target: "#header-panel", swap: "outerHTML" });
      }
    });

    var api = { go: go, zoomBy: zoomBy };
    active = api;
    show();
    if (!root.closest("[data-keep-focus]")) { stage.focus(); }
  }

  document.addEventListener("keydown", function (event) {
    if (!active || event.target.matches("input, select, textarea")) { return; }
    var moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (moves[event.key] !== undefined) { event.preventDefault(); active.go(moves[event.key]); }
    if (event.key === "+" || event.key === "=") { active.zoomBy(1.25); }
    if (event.key === "-") { active.zoomBy(0.8); }
  });

  function start() { init(document.getElementById("viewer")); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
  document.addEventListener("htmx:load", function (event) {
    var root = event.target.id === "viewer" ? event.target : event.target.querySelector && event.target.querySelector("#viewer");
    if (root) { init(root); }
  });
}());
