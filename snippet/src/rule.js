// The new-touch rule of DESIGN.md "Semantics": campaign parameters or a click ID make a new touch
// unless identical to the latest touch; a referral only after a 30-minute session; reloads none
// (the caller checks reloads: they belong to the page load, not to the rule).

/** A referral starts a new touch only when the latest one is older than this (ms). */
export const SESSION = 30 * 60 * 1000;

/** @param {Record<string, string> | undefined} params */
const canonical = (params) => JSON.stringify(Object.entries(params || {}).sort());

/**
 * Whether two parameter objects hold the same names and values, in any order.
 *
 * @param {Record<string, string> | undefined} a
 * @param {Record<string, string> | undefined} b
 */
export const sameParams = (a, b) => canonical(a) == canonical(b);

/**
 * The newer (by `ts`) of two touches, either of which may be missing.
 *
 * @template {{ts: number}} T
 * @param {T | undefined} a
 * @param {T | undefined} b
 */
export const newer = (a, b) => (!a || (b && b.ts > a.ts) ? b : a);

/**
 * Whether this page view is a new touch.
 *
 * @param {{ts: number, params?: Record<string, string>} | undefined} latest the latest touch known
 * @param {Record<string, string>} params the tracked parameters of the current URL
 * @param {boolean} external whether `document.referrer` is another site
 * @param {number} now epoch ms
 */
export function isNewTouch(latest, params, external, now) {
  if (Object.keys(params)[0]) return !latest || !sameParams(latest.params, params);
  return external && (!latest || now - latest.ts > SESSION);
}
