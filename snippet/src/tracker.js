// The tracker with its parts bundled (the ES module's, and the unit tests'): the linker, the SPA
// hooks and what an answer other than 2xx means are there at once, so `createTracker`
// behaves as the script tag does once its parts have loaded.
import { createTracker as core } from "./core.js";
import { linker } from "./link.js";
import { spa } from "./spa.js";
import { answer } from "./answer.js";

const PARTS = { link: linker, spa, answer };

/** @typedef {import("./core.js").Options} Options */

/**
 * Create a tracker. The options are the script tag's data-* attributes, camel-cased.
 *
 * @param {Options} [options]
 * @param {string} [beacon] the endpoint when `options.endpoint` is not given
 */
export const createTracker = (options = {}, beacon = "/utm/beacon") =>
  core(options, beacon, (name, ready) => ready(PARTS[name]));
