// pacslite: the little script the pages need beyond htmx. No inline script anywhere (CSP).
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-print]");
  if (button) { window.print(); }
});
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-empty]");  // e.g. closing the prior report beside the editor
  if (button) {
    var target = document.querySelector(button.dataset.empty);
    if (target) { target.replaceChildren(); }
  }
});
// A form marked data-enter-moves (the registration desk): Enter goes to the next field instead of
// submitting half a form (in a text area it starts a new line); Ctrl + Enter submits it from any
// field, the text areas included.
document.addEventListener("keydown", function (event) {
  var form = event.target.closest && event.target.closest("form[data-enter-moves]");
  if (!form || event.key !== "Enter") { return; }
  if (event.ctrlKey || event.metaKey) { event.preventDefault(); form.requestSubmit(); return; }
  if (event.target.matches("textarea, button")) { return; }
  event.preventDefault();
  var fields = Array.prototype.filter.call(form.querySelectorAll("input, select, textarea, button"), function (el) {
    return !el.disabled && el.type !== "hidden" && el.offsetParent !== null;
  });
  var next = fields[fields.indexOf(event.target) + 1];
  if (next) { next.focus(); }
});
// Alt + a letter follows the link or presses the button marked data-shortcut with that letter
// (Alt + B: book the exam just registered), or goes to the field so marked (Alt + T: the report
// templates' search), the same in every browser (accesskey differs).
document.addEventListener("keydown", function (event) {
  if (!event.altKey || event.ctrlKey || event.metaKey || event.key.length !== 1) { return; }
  var target = document.querySelector("[data-shortcut='" + event.key.toLowerCase() + "']");
  if (!target) { return; }
  event.preventDefault();
  if (target.matches("input, textarea, select")) { target.focus(); } else { target.click(); }
});
// A report refused for an unfilled phrase blank ("__"): the first blank of the first text named
// is selected, so the radiologist types straight into it.
function selectBlank() {
  var area = document.querySelector("textarea[data-select-blank]");
  var match = area && /_{2,}|\uFF3F+/.exec(area.value);
  if (match) { area.focus(); area.setSelectionRange(match.index, match.index + match[0].length); }
}
if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", selectBlank); } else { selectBlank(); }
// A page opened to be printed by itself (a kiosk's report: body data-autoprint, no receipt slip,
// which receipt.js prints): the print dialog once its images (the signatures) have loaded; after
// printing, back to data-after-print (the kiosk's first page, for the next patient).
window.addEventListener("load", function () {
  var body = document.body;
  if (body.dataset.autoprint !== "1" || document.querySelector("article.slip")) { return; }
  if (body.dataset.afterPrint) {
    window.addEventListener("afterprint", function () { window.location.assign(body.dataset.afterPrint); });
  }
  window.print();
});
// Report templates (the report page): a template's texts go into the findings and the impression
// at their cursors (Shift: in place of them; the normal report in place of empty texts) through
// the browser's own editing, so that Ctrl+Z takes it back and the draft saves itself as after
// typing. ↑ ↓ move through the tree; in the texts, Tab selects the next choice slot {左/右}
// (Shift+Tab the one before) and 1–9 keeps that choice.
(function () {
  "use strict";
  var SLOT = /\{[^{}\/\n]+(?:\/[^{}\/\n]+)+\}/g;

  function put(area, value, replace) {
    if (!area || !value) { return; }
    area.focus();
    if (replace) { area.select(); } else if (area.value && area.selectionStart === area.value.length && !/\n$/.test(area.value)) {
      value = "\n" + value;  // after what is written, on a line of its own
    }
    if (!document.execCommand("insertText", false, value)) {  // a browser without it: no undo, but the text
      area.setRangeText(value, area.selectionStart, area.selectionEnd, "end");
      area.dispatchEvent(new Event("input", { bubbles: true }));
    }
  }

  function slotNear(area, forward) {
    var text = area.value, found = [], match;
    SLOT.lastIndex = 0;
    while ((match = SLOT.exec(text)) !== null) { found.push([match.index, match.index + match[0].length]); }
    if (!found.length) { return null; }
    if (forward) {
      return found.find(function (s) { return s[0] >= area.selectionEnd; }) || found[0];
    }
    var before = found.filter(function (s) { return s[1] <= area.selectionStart; });
    return before.length ? before[before.length - 1] : found[found.length - 1];
  }

  function selectSlot(area, forward) {
    var slot = slotNear(area, forward);
    if (slot) { area.focus(); area.setSelectionRange(slot[0], slot[1]); }
    return Boolean(slot);
  }

  var lastText = null;  // the text the radiologist was writing in: the template goes to its cursor
  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("#f-findings, #f-impression")) { lastText = event.target; }
  });

  function insertTemplate(button, replace) {
    var findings = document.getElementById("f-findings"), impression = document.getElementById("f-impression");
    if (!findings || !impression) { return; }
    if (button.hasAttribute("data-replace-empty") && !findings.value.trim() && !impression.value.trim()) { replace = true; }
    [findings, impression].forEach(function (area) {  // the other text: after what is written
      if (area !== lastText) { area.setSelectionRange(area.value.length, area.value.length); }
    });
    var start = replace ? 0 : findings.selectionStart;
    put(impression, button.dataset.impression, replace);
    put(findings, button.dataset.findings, replace);
    findings.setSelectionRange(start, start);
    selectSlot(findings, true) || findings.focus();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-template]");
    if (button) { event.preventDefault(); insertTemplate(button, event.shiftKey); }
  });
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target.matches && (target.matches("[data-template]") || target.id === "template-search")) {
      var buttons = Array.prototype.slice.call(document.querySelectorAll("#template-results [data-template]"));
      var at = buttons.indexOf(target);
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        var next = buttons[event.key === "ArrowDown" ? at + 1 : Math.max(at - 1, 0)];
        if (next) { next.focus(); }
      } else if (event.key === "Enter" && target.matches("[data-template]")) {
        event.preventDefault();
        insertTemplate(target, event.shiftKey);
      } else if (event.key === "Enter" && buttons.length) {
        event.preventDefault();  // Enter in the search inserts the first match
        insertTemplate(buttons[0], event.shiftKey);
      }
      return;
    }
    if (!target.matches || !target.matches("#f-findings, #f-impression") || event.ctrlKey || event.altKey || event.metaKey) { return; }
    if (event.key === "Tab") {
      if (selectSlot(target, !event.shiftKey)) { event.preventDefault(); }
      return;
    }
    var selected = target.value.slice(target.selectionStart, target.selectionEnd);
    if (/^[1-9]$/.test(event.key) && /^\{[^{}]*\}$/.test(selected) && selected.indexOf("/") > 0) {
      var choices = selected.slice(1, -1).split("/"), choice = choices[Number(event.key) - 1];
      event.preventDefault();
      if (choice !== undefined) { put(target, choice, false); selectSlot(target, true); }
    }
  });
}());
