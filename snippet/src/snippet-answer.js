// The part static/snippet-answer.js: what an answer other than 2xx means, which the snippet loads
// when one arrives.
import { answer } from "./answer.js";

try {
  /** @type {any} */ (document.currentScript)._utm(answer);
} catch {}
