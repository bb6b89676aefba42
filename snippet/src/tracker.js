// The tracker: one factory returning the API. Every entry point sits in try/catch and every
// promise settles: a script on someone else's page must never throw into it (blocked storage or
// cookies, no fetch, the collector down or blocked).
import { readCookie, writeCookie } from "./cookie.js";
import { newId } from "./ids.js";
import { parseParams } from "./params.js";
import { isNewTouch, newer } from "./rule.js";
import { bodies, settled } from "./send.js";

/**
 * @typedef {import("./cookie.js").Touch} Touch
 * @typedef {{v?: string, first?: Touch, latest?: Touch, queue: Touch[]}} Stored
 * @typedef {{
 *   endpoint?: string, cookieName?: string, cookieDomain?: string, maxAge?: number | string,
 *   customTags?: string | string[], spa?: "auto" | boolean, consent?: "required", gpc?: "ignore"
 * }} Options
 */

/**
 * Create a tracker. The options are the script tag's data-* attributes, camel-cased.
 *
 * @param {Options} [options]
 * @param {string} [beacon] the endpoint when `options.endpoint` is not given
 */
export function createTracker(options = {}, beacon = "/utm/beacon") {
  const name = options.cookieName || "utm_tracker";
  const endpoint = options.endpoint || beacon;
  const tags = String(options.customTags || "").toLowerCase().match(/[^\s,]+/g) || [];
  // The one "ignored because" path: Global Privacy Control, unless the tag says data-gpc="ignore"
  // (the collector's Jinja helper does when UTM_TRACKER_RESPECT_GPC is off), or consent denied.
  const gpc = options.gpc != "ignore" && globalThis.navigator?.globalPrivacyControl === true;
  /** 1: granted, 0: waiting for consent(), -1: denied (or GPC: nothing stored or sent). */
  let consent = gpc ? -1 : options.consent == "required" ? 0 : 1;
  /** @type {Touch[]} touches waiting in memory for consent */
  let held = [];
  /** @type {Stored} the state, should localStorage not keep it */
  let memory = { queue: [] };
  let firstCapture = true;
  /** @type {Promise<unknown>} */
  let sending = Promise.resolve();

  /** @returns {Stored} */
  const load = () => {
    try {
      const stored = JSON.parse(/** @type {string} */ (localStorage.getItem(name)));
      if (Array.isArray(stored.queue)) return stored;
    } catch {}
    return memory;
  };

  /** @param {Stored} stored */
  const save = (stored) => {
    memory = stored;
    try {
      localStorage.setItem(name, JSON.stringify(stored));
    } catch {}
  };

  /**
   * Keep new touches (localStorage, cookie) after adopting the cookie's visitor id and latest touch.
   *
   * @param {Touch[]} touches
   */
  function commit(touches) {
    const stored = load();
    const state = readCookie(name) || { t: [] };
    const visitor = (stored.v = state.v || stored.v || newId());
    stored.latest = newer(stored.latest, /** @type {Touch} */ (state.l));
    for (const touch of touches) {
      stored.queue.push(touch);
      stored.latest = touch;
      state.t.push(touch);
      state.l = { id: touch.id, ts: touch.ts, params: touch.params };
    }
    stored.first = stored.first || stored.latest;
    save(stored);
    if (touches.length || state.v != visitor) {
      state.v = visitor;
      try {
        writeCookie(name, state, options.maxAge || 31536000, options.cookieDomain);
      } catch {}
    }
  }

  /** Read the current URL again; returns the new touch, or null when this view makes none. */
  function capture() {
    try {
      const first = firstCapture;
      firstCapture = false;
      if (consent < 0) return null;
      const latest = held[held.length - 1] || newer(load().latest, readCookie(name)?.l);
      const params = parseParams(location.href, tags);
      // The referrer and the navigation type belong to the page load, not to SPA route changes.
      // A referrer is external when its host differs from the page's.
      const referrer =
        first && document.referrer && new URL(document.referrer).host != location.host
          ? document.referrer
          : undefined;
      const reload = first && performance.getEntriesByType("navigation")[0]?.type == "reload";
      const now = Date.now();
      /** @type {Touch | null} */
      const touch =
        !reload && isNewTouch(latest, params, !!referrer, now)
          ? { id: newId(), ts: now, url: location.href, referrer, params }
          : null;
      if (consent > 0) {
        commit(touch ? [touch] : []);
        if (touch || first) flush();
      } else if (touch) {
        held.push(touch);
      }
      return touch;
    } catch {
      return null;
    }
  }

  /** sendBeacon every queued touch (on pagehide); they stay queued: its answer is never seen. */
  const sendBeacons = () => {
    try {
      const stored = load();
      if (consent > 0) {
        for (const [body] of bodies(/** @type {string} */ (stored.v), stored.queue)) {
          // A string body goes as text/plain;charset=UTF-8, CORS-safelisted (Fetch standard).
          navigator.sendBeacon(endpoint, body);
        }
      }
    } catch {}
  };

  // Where fetch is missing it throws here, the touches stay queued and pagehide sends them.
  const send = () => {
    const stored = load();
    if (consent > 0) {
      return Promise.allSettled(
        bodies(/** @type {string} */ (stored.v), stored.queue).map(([body, id]) =>
          // The same type with fetch: a "simple request", so no CORS preflight.
          fetch(endpoint, { method: "POST", body, keepalive: true, credentials: "include" }).then((response) => {
            if (settled(response.status)) {
              const now = load();
              now.queue = now.queue.filter((touch) => touch.id != id);
              save(now);
            }
          }),
        ),
      );
    }
  };

  /** Send what is not yet acknowledged; resolves once the collector has answered (never rejects). */
  function flush() {
    return (sending = sending.then(send).catch(() => {}));
  }

  /**
   * Grant consent (store and send the touches held so far) or deny it (drop them, capture no more).
   *
   * @param {boolean} granted
   */
  const setConsent = (granted) => {
    try {
      if (!gpc) consent = granted ? 1 : -1;
      if (consent > 0) commit(held);
    } catch {}
    held = [];
    return flush();
  };

  /** What this browser holds: the first and the latest touch (or null). */
  const touches = () => {
    const stored = load();
    return { first: stored.first || null, latest: stored.latest || null };
  };

  try {
    addEventListener("pagehide", sendBeacons);
    if (options.spa == "auto" || options.spa === true) {
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
  } catch {}

  return { capture, touches, flush, consent: setConsent };
}
