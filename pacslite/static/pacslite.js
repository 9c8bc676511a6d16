// pacslite: the little script the pages need beyond htmx. No inline script anywhere (CSP).
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-print]");
  if (button) { window.print(); }
});
