// The ES module for bundlers (the npm package "flask-utm-tracker"):
//   import { init, capture } from "flask-utm-tracker";
//   init({ endpoint: "https://app.example.com/utm/beacon" });   // captures the landing page
//   router.afterEach(() => capture());
import { createTracker } from "./tracker.js";

export { createTracker };

/** @type {ReturnType<typeof createTracker> | undefined} */
let tracker;

/**
 * Create the page's tracker with `options` and capture the landing page. Call it once, early;
 * later calls return the tracker already made and ignore their options.
 *
 * @param {import("./tracker.js").Options} [options]
 */
export function init(options) {
  if (!tracker) {
    tracker = createTracker(options);
    tracker.capture();
  }
  return tracker;
}

/** The page's tracker, made with the default options if `init` was not called. */
const current = () => tracker || (tracker = createTracker());

/** Read the current URL again (call it on SPA route changes); returns the new touch or null. */
export const capture = () => current().capture();
/** What this browser holds: `{first, latest}`. */
export const touches = () => current().touches();
/** Send what is not yet acknowledged; resolves when the collector has answered (never rejects). */
export const flush = () => current().flush();
/** Grant (`true`: store and send the held touches) or deny (`false`: drop them) consent. */
export const consent = (/** @type {boolean} */ granted) => current().consent(granted);
