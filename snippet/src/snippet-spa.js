// The part static/snippet-spa.js: the History API hooks, which the snippet loads with
// data-spa="auto".
import { spaPart } from "./spa.js";

try {
  /** @type {any} */ (document.currentScript)._utm(spaPart);
} catch {}
