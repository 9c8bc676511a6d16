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
// submitting half a form; Ctrl + Enter submits it.
document.addEventListener("keydown", function (event) {
  var form = event.target.closest && event.target.closest("form[data-enter-moves]");
  if (!form || event.key !== "Enter" || event.target.matches("textarea, button")) { return; }
  event.preventDefault();
  if (event.ctrlKey || event.metaKey) { form.requestSubmit(); return; }
  var fields = Array.prototype.filter.call(form.querySelectorAll("input, select, textarea, button"), function (el) {
    return !el.disabled && el.type !== "hidden" && el.offsetParent !== null;
  });
  var next = fields[fields.indexOf(event.target) + 1];
  if (next) { next.focus(); }
});
