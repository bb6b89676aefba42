// data-spa="auto": capture on history.pushState, replaceState and popstate. The snippet loads it
// as the part snippet-spa.js; a route change made while it was loading is caught by the capture
// it makes on arrival (the same URL twice is no new touch).

/**
 * Hook the History API to `capture`.
 *
 * @param {() => unknown} capture
 */
export function spa(capture) {
  for (const method of /** @type {const} */ (["pushState", "replaceState"])) {
    const original = history[method];
    // pushState and replaceState return undefined (HTML standard): nothing to pass on.
    history[method] = function () {
      original.apply(this, /** @type {any} */ (arguments));
      capture();
    };
  }
  addEventListener("popstate", capture);
}

/** The part's entry: hooked, then one capture for a route change made while it loaded. */
export const spaPart = (/** @type {() => unknown} */ capture) => (spa(capture), capture());
