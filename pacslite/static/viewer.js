// pacslite's image viewer: one series, image by image. Scrolling (wheel, arrow keys, slider),
// window/level by dragging or by preset, reset, invert, fit or 1:1, the header. The server
// renders every frame (PNG); this only builds the URLs. No inline script anywhere (CSP).
(function () {
  "use strict";
  var root = document.getElementById("viewer");
  if (!root) { return; }
  var stack = JSON.parse(root.dataset.stack || "[]");
  var image = document.getElementById("viewer-image");
  var stage = document.getElementById("viewer-stage");
  var slider = document.getElementById("viewer-slider");
  var position = document.getElementById("viewer-position");
  var windowLabel = document.getElementById("viewer-window");
  var preset = document.getElementById("viewer-preset");
  var initial = root.dataset.wc !== undefined ? [Number(root.dataset.wc), Number(root.dataset.ww)] : null;
  var state = { index: Math.floor(stack.length / 2), wc: null, ww: null, invert: false };
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

  function show() {
    if (!stack.length) { return; }
    var entry = stack[state.index];
    image.src = url(entry, true);
    image.dataset.index = String(state.index);
    slider.value = String(state.index);
    position.textContent = (state.index + 1) + " / " + stack.length +
      (entry.frames > 1 ? " (" + (entry.frame + 1) + "/" + entry.frames + ")" : "");
    windowLabel.textContent = state.wc === null ? "" : "W " + Math.round(state.ww) + " L " + Math.round(state.wc);
    for (var step = 1; step <= 3; step += 1) {  // the next images, ready before they are asked for
      var ahead = stack[state.index + step];
      if (ahead) { new Image().src = url(ahead, true); }
    }
  }

  function go(delta) {
    var next = Math.min(stack.length - 1, Math.max(0, state.index + delta));
    if (next !== state.index) { state.index = next; show(); }
  }

  slider.max = String(Math.max(stack.length - 1, 0));
  slider.addEventListener("input", function () { state.index = Number(slider.value); show(); });
  stage.addEventListener("wheel", function (event) {
    event.preventDefault();
    go(event.deltaY > 0 ? 1 : -1);
  }, { passive: false });
  document.addEventListener("keydown", function (event) {
    if (event.target.matches("input, select, textarea")) { return; }
    var moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (moves[event.key] !== undefined) { event.preventDefault(); go(moves[event.key]); }
  });

  var drag = null;
  stage.addEventListener("pointerdown", function (event) {
    if (state.wc === null) { return; }  // a colour image has no window
    drag = { x: event.clientX, y: event.clientY, wc: state.wc, ww: state.ww };
    stage.setPointerCapture(event.pointerId);
  });
  stage.addEventListener("pointermove", function (event) {
    if (!drag) { return; }
    var scale = Math.max(drag.ww / 256, 1);
    state.ww = Math.max(1, drag.ww + (event.clientX - drag.x) * scale);
    state.wc = drag.wc + (event.clientY - drag.y) * scale;
    windowLabel.textContent = "W " + Math.round(state.ww) + " L " + Math.round(state.wc);
  });
  stage.addEventListener("pointerup", function () {
    if (drag) { drag = null; if (preset) { preset.value = ""; } show(); }
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
    var button = event.target.closest("[data-action]");
    if (!button) { return; }
    var action = button.dataset.action;
    if (action === "prev") { go(-1); }
    if (action === "next") { go(1); }
    if (action === "reset") {
      state.wc = initial ? initial[0] : null; state.ww = initial ? initial[1] : null; state.invert = false;
      if (preset) { preset.value = ""; }
      stage.classList.add("fit");
      show();
    }
    if (action === "invert") {
      state.invert = !state.invert;
      button.setAttribute("aria-pressed", String(state.invert));
      show();
    }
    if (action === "zoom") {
      var fit = stage.classList.toggle("fit");
      button.setAttribute("aria-pressed", String(!fit));
    }
    if (action === "header" && window.htmx) {
      var entry = stack[state.index];
      window.htmx.ajax("GET", root.dataset.header.replace("/0/", "/" + entry.id + "/"),
                       { target: "#header-panel", swap: "outerHTML" });
    }
  });

  show();
  stage.focus();
}());
