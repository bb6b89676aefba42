// The script-tag entry point (built as an IIFE into the collector's static/snippet.js):
//   <script src="/utm/snippet.js" async data-custom-tags="ref,partner"></script>
// Options come from the tag's data-* attributes; the beacon endpoint defaults to "beacon" beside
// the script's own URL (/utm/snippet.js -> /utm/beacon).
import { createTracker } from "./tracker.js";

try {
  if (!window.utmTracker) {
    const script = /** @type {HTMLScriptElement | null} */ (document.currentScript);
    const tracker = script
      ? createTracker(script.dataset, new URL("beacon", script.src || location.href).href)
      : createTracker();
    /** @type {any} */ (window).utmTracker = tracker;
    tracker.capture();
  }
} catch {}
