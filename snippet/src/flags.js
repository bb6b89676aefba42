// Build flags. build.mjs compiles three builds of the script tag: snippet.js (DEBUG and FULL
// false: what most tags need), snippet-full.js (FULL: the tag options only some sites use) and
// snippet-debug.js (both: the full tracker with its logging). The ES module and the unit tests
// read the source, so both are true there.

/** Whether the logging of data-debug (and ?utm_debug=1) is compiled in. */
export const DEBUG = true;
/**
 * Whether the options only some tags set are compiled in: data-consent, data-gpc,
 * data-site-hosts, data-custom-tags. snippet.js, built without them, hands such a tag over to
 * snippet-full.js.
 */
export const FULL = true;
