// The part static/snippet-link.js: the linker, which the snippet loads with data-link-domains.
import { linker } from "./link.js";

try {
  /** @type {any} */ (document.currentScript)._utm(linker);
} catch {}
