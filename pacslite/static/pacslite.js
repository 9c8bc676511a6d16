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
// (Alt + B: book the exam just registered), the same in every browser (accesskey differs).
document.addEventListener("keydown", function (event) {
  if (!event.altKey || event.ctrlKey || event.metaKey || event.key.length !== 1) { return; }
  var target = document.querySelector("[data-shortcut='" + event.key.toLowerCase() + "']");
  if (target) { event.preventDefault(); target.click(); }
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
