// The receipt: on an 80 mm roll the page is as long as the slip (not a fixed 160 mm), and a
// receipt opened to be printed (?print=1) opens the print dialog by itself once its barcode has
// loaded. A script file, set through the CSS object model: nothing inline (CSP).
(function () {
  "use strict";
  var slip = document.querySelector("article.slip");
  if (!slip) { return; }

  function fitRoll() {  // 80 mm roll: page height = the slip's height plus the margins
    if (!document.querySelector("main.receipt-80mm")) { return; }
    var millimetres = slip.getBoundingClientRect().height * 25.4 / 96 + 8;
    var sheet = Array.prototype.find.call(document.styleSheets, function (s) {
      return s.href && s.href.indexOf("receipt-80mm.css") !== -1;
    });
    if (sheet) { sheet.insertRule("@page { size: 80mm " + Math.ceil(millimetres) + "mm; margin: 3mm 4mm; }", sheet.cssRules.length); }
    document.body.dataset.pageHeightMm = String(Math.ceil(millimetres));
  }

  function ready() {
    fitRoll();
    if (document.body.dataset.autoprint === "1") { window.print(); }
  }

  var barcode = document.getElementById("barcode");
  function start() {
    if (barcode && !barcode.complete) { barcode.addEventListener("load", ready); barcode.addEventListener("error", ready); } else { ready(); }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
