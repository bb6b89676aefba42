// data-debug (or ?utm_debug=1): each decision of the tracker in the console, prefixed "utm:".
// The tracker logs numbers, an index of WORDS, so its calls stay short; they are compiled only
// into the debug build (static/snippet-debug.js, which the snippet hands over to when asked)
// and the ES module.

/** What each code the tracker logs means. */
export const WORDS = [
  "captured",
  "held for consent",
  "ignored: GPC",
  "ignored: consent",
  "ignored: reload",
  "ignored: same as latest",
  "ignored: same site",
  "ignored: direct",
  "sent",
  "acknowledged",
  "dropped",
  "kept",
  "linked",
];

/**
 * Print one decision: its words, then its details (a touch, an id, a status, an error).
 *
 * @param {number} code an index of WORDS
 * @param {...unknown} details
 */
export const print = (code, ...details) => console.log("utm:", WORDS[code], ...details.filter((detail) => detail != null));
