// Build flags. build.mjs compiles snippet.js with DEBUG false (the logging is left out) and
// snippet-debug.js, the same tracker, with DEBUG true; the ES module and the unit tests read the
// source, so DEBUG is true there.

/** Whether the logging of data-debug (and ?utm_debug=1) is compiled in. */
export const DEBUG = true;
