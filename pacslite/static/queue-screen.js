// The waiting-room screen: when a new call (or a call again) appears on the board, a chime and
// the call spoken in the page's language with the browser's speech synthesis, where it has one.
// Browsers play sound only after a first click on the page: "Sound on" is that click.
(function () {
  "use strict";
  var heard = {};
  var soundOn = false;

  function calls() {
    return Array.prototype.map.call(document.querySelectorAll(".board-now[data-call]"), function (el) {
      return { key: el.dataset.call, say: el.dataset.say };
    });
  }

  function chime() {
    var Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) { return; }
    var audio = new Context();
    [880, 660].forEach(function (frequency, i) {
      var tone = audio.createOscillator();
      var gain = audio.createGain();
      tone.frequency.value = frequency;
      gain.gain.setValueAtTime(0.25, audio.currentTime + i * 0.45);
      gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + i * 0.45 + 0.4);
      tone.connect(gain).connect(audio.destination);
      tone.start(audio.currentTime + i * 0.45);
      tone.stop(audio.currentTime + i * 0.45 + 0.4);
    });
  }

  function speak(text) {
    if (!("speechSynthesis" in window) || !text) { return; }
    var call = new SpeechSynthesisUtterance(text);
    call.lang = document.documentElement.lang || "zh-CN";
    call.rate = 0.9;
    window.speechSynthesis.speak(call);
  }

  function announce(first) {
    calls().forEach(function (call) {
      if (heard[call.key]) { return; }
      heard[call.key] = true;
      document.body.dataset.lastCall = call.key;  // what was announced (the browser test reads it)
      if (!first && soundOn) {
        chime();
        window.setTimeout(function () { speak(call.say); speak(call.say); }, 1000);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    announce(true);  // what is on the board when the screen opens is not called again
    var button = document.getElementById("sound-on");
    if (button) {
      button.addEventListener("click", function () { soundOn = true; button.hidden = true; chime(); });
    }
  });
  document.addEventListener("htmx:afterSwap", function () { announce(false); });
}());
