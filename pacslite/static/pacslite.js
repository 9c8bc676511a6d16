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
