// The script-tag entry point (built as an IIFE into the collector's static/snippet.js, and with
// the debug logging into static/snippet-debug.js):
//   <script src="/utm/snippet.js" async data-custom-tags="ref,partner"></script>
// Options come from the tag's data-* attributes; the beacon endpoint defaults to "beacon" beside
// the script's own URL (/utm/snippet.js -> /utm/beacon), and the optional parts are loaded from
// beside it too. With data-debug or ?utm_debug=1, snippet.js hands the tag over to
// snippet-debug.js, which does the same and logs each decision.
import { createTracker } from "./core.js";
import { DEBUG, FULL } from "./flags.js";

try {
  /** @type {any} */
  let script = document.currentScript;
  // The full and debug builds run for the tag that handed over to them (or for their own tag).
  if (FULL) script = script?._utm || script;
  const options = script?.dataset || {};
  // Without URL, whose first use in a page costs CPU: the last path segment and what follows
  // replaced. No script (or one without src): the collector's default mount.
  /** @param {string} file */
  const beside = (file) => (script?.src || "/utm/").replace(/[^/?#]*([?#].*)?$/, file);
  /**
   * Add the classic script snippet-<name>.js from beside this one; it finds `hand` as
   * `document.currentScript._utm`.
   *
   * @param {string} name
   * @param {unknown} hand
   */
  const add = (name, hand) =>
    document.head.append(Object.assign(document.createElement("script"), { src: beside(`snippet-${name}.js`), _utm: hand }));
  // self: the window (shorter in the build).
  if (!self.utmTracker) {
    // Logging asked for: the debug build. Any option (a data-* attribute): the full build.
    /** @type {unknown} */
    let other;
    if (!FULL && (other = "debug" in options || /utm_debug=1/.test(/** @type {any} */ (location)) ? "debug" : Object.keys(options)[0] && "full")) {
      add(/** @type {string} */ (other), script);
    } else {
      // A part hands itself to `ready`.
      const tracker = createTracker(options, beside("beacon"), add);
      /** @type {any} */ (self).utmTracker = tracker;
      // Captured from the microtask checkpoint that ends this script's evaluation: with a
      // DevTools session on the page, reading document.cookie makes Chromium capture the stack
      // with source positions, and with this script's top level on the stack V8 re-parses nearly
      // all of it for them (visitors, with no session, pay nothing for that). Nothing runs
      // between (no task: no pagehide, no route change, no other script).
      Promise.resolve().then(tracker.capture);
    }
  }
} catch {}
