// The tracker: one factory returning the API. Every entry point sits in try/catch and every
// promise settles: a script on someone else's page must never throw into it (blocked storage or
// cookies, no fetch, the collector down or blocked).
import { readCookie, writeCookie } from "./cookie.js";
import { newId } from "./ids.js";
import { decorate, domainOf, list, token } from "./link.js";
import { parseParams } from "./params.js";
import { isNewTouch, newer } from "./rule.js";
import { bodies, misconfigured, settled } from "./send.js";

/**
 * @typedef {import("./cookie.js").Touch} Touch
 * @typedef {{v?: string, first?: Touch, latest?: Touch, queue: Touch[]}} Stored
 * @typedef {{
 *   endpoint?: string, cookieName?: string, cookieDomain?: string, maxAge?: number | string,
 *   customTags?: string | string[], spa?: "auto" | boolean, consent?: "required", gpc?: "ignore",
 *   siteHosts?: string | string[], linkDomains?: string | string[], debug?: unknown
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
  const remembered = name + "_consent";
  const endpoint = options.endpoint || beacon;
  const tags = list(options.customTags);
  const links = list(options.linkDomains);
  // Referrers from these hosts (and their sub-domains) are this site, as is the page's own host.
  const site = links.concat(list(options.siteHosts), list(options.cookieDomain));
  /** @type {Touch[]} touches waiting in memory for consent */
  let held = [];
  /** @type {Stored} the state, should localStorage not keep it */
  let memory = { queue: [] };
  let firstCapture = true;
  let warned = false;
  /** @type {Promise<unknown>} */
  let sending = Promise.resolve();
  /** @type {(...args: unknown[]) => void} data-debug or ?utm_debug=1: each decision in the console */
  let log = () => {};
  // Global Privacy Control wins, unless the tag says data-gpc="ignore" (the collector's Jinja
  // helper does when UTM_TRACKER_RESPECT_GPC is off).
  let gpc = false;
  /** 1: granted, 0: waiting for consent(), -1: denied or GPC (nothing stored or sent). */
  let consent = options.consent == "required" ? 0 : 1;
  try {
    if (options.debug != null || /[?&]utm_debug=1/.test(location.search)) log = console.log.bind(console, "utm:");
    gpc = options.gpc != "ignore" && navigator.globalPrivacyControl === true;
    // A consent(true|false) of an earlier page holds until revoked.
    consent = gpc ? -1 : +(/** @type {string} */ (localStorage.getItem(remembered))) || consent;
  } catch {}

  /** @returns {Stored} */
  const load = () => {
    try {
      const stored = JSON.parse(/** @type {string} */ (localStorage.getItem(name)));
      if (stored.queue) return stored;
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

  /** @param {import("./cookie.js").CookieState} [state] none: expire the cookie */
  const setCookie = (state) => {
    try {
      writeCookie(name, state, options.maxAge || 31536000, options.cookieDomain);
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
      setCookie(state);
    }
  }

  /** Read the current URL again; returns the new touch, or null when this view makes none. */
  function capture() {
    try {
      const first = firstCapture;
      firstCapture = false;
      if (consent < 0) return log("ignored:", gpc ? "GPC" : "consent"), null;
      const latest = held[held.length - 1] || newer(load().latest, readCookie(name)?.l);
      const params = parseParams(location.href, tags);
      // The referrer and the navigation type belong to the page load, not to SPA route changes.
      const referrer = first && document.referrer;
      const url = referrer && new URL(referrer);
      const outside = url && url.host != location.host && !domainOf(url.hostname, site) ? referrer : undefined;
      const reload = first && performance.getEntriesByType("navigation")[0]?.type == "reload";
      const now = Date.now();
      /** @type {Touch | null} */
      const touch =
        !reload && isNewTouch(latest, params, !!outside, now)
          ? { id: newId(), ts: now, url: location.href, referrer: outside, params }
          : null;
      log(
        touch ? (consent ? "captured" : "held for consent") : "ignored:",
        touch || (reload ? "reload" : outside || Object.keys(params).length ? "same as latest" : referrer ? "same site" : "direct"),
      );
      if (consent) {
        commit(touch ? [touch] : []);
        // From a task of its own, not the load's microtask checkpoint: the page goes first.
        if (touch || first) setTimeout(flush);
      } else if (touch) {
        held.push(touch);
      }
      return touch;
    } catch {
      return null;
    }
  }

  /**
   * Send every queued touch: with fetch, whose answer settles it or keeps it queued; with
   * sendBeacon on pagehide (its answer is never seen: the touches stay queued). Where fetch is
   * missing it throws, the touches stay queued and pagehide sends them.
   *
   * @param {unknown} [pagehide]
   */
  const send = (pagehide) => {
    const stored = load();
    if (consent > 0) {
      return Promise.all(
        bodies(/** @type {string} */ (stored.v), stored.queue).map(([body, id]) =>
          // A string body goes as text/plain;charset=UTF-8, CORS-safelisted (Fetch standard):
          // a "simple request", so no CORS preflight.
          pagehide
            ? navigator.sendBeacon(endpoint, body)
            : (log("sent", id),
              fetch(endpoint, { method: "POST", body, keepalive: true, credentials: "include" }).then((response) => {
                const status = response.status;
                const done = settled(status);
                log(done ? (status < 300 ? "acknowledged" : "dropped") : "kept", id, status);
                if (done) {
                  const now = load();
                  now.queue = now.queue.filter((touch) => touch.id != id);
                  save(now);
                } else if (!warned && misconfigured(status)) {
                  warned = true;
                  // The collector's error says what to fix; another server's 404 does not.
                  response.json().then(
                    (answer) => answer.error,
                    () => "check data-endpoint",
                  ).then((error) => console.warn(`flask-utm-tracker: ${endpoint} answered ${status}, touches kept: ${error}`));
                }
              }, (error) => log("kept", id, error))),
        ),
      );
    }
  };

  /** Send what is not yet acknowledged; resolves once the collector has answered (never rejects). */
  function flush() {
    return (sending = sending.then(() => send()).catch(() => {}));
  }

  /**
   * Grant consent (store and send the touches held so far) or deny it (drop them and what this
   * browser stored, capture no more). Remembered in localStorage until the next call; GPC wins.
   *
   * @param {boolean} granted
   */
  const setConsent = (granted) => {
    try {
      if (!gpc) {
        consent = granted ? 1 : -1;
        if (granted) {
          commit(held);
        } else {
          memory = { queue: [] };
          setCookie();
          localStorage.removeItem(name);
        }
        localStorage.setItem(remembered, String(consent));
      }
    } catch {}
    held = [];
    return flush();
  };

  /** What this browser holds: the first and the latest touch (or null). */
  const touches = () => {
    const stored = load();
    return { first: stored.first || null, latest: stored.latest || null };
  };

  /**
   * On the way to a link domain (data-link-domains) other than this page's, through a link or a
   * form: `_utm` on the link's href or the form's action (for a GET form, whose action loses its
   * query on submission, a hidden input).
   *
   * @param {Event} event
   */
  const link = (event) => {
    try {
      const element = /** @type {any} */ (event.target).closest("a,area,form");
      const url = new URL(element.action ?? element.href);
      const domain = domainOf(url.hostname, links);
      const stored = load();
      const first = stored.first;
      const value =
        consent > 0 &&
        domain &&
        domain != domainOf(location.hostname, links) &&
        // The first touch, then the pending ones (the cookie's, oldest first).
        token([first, ...(readCookie(name)?.t || []).filter((touch) => touch.id != first?.id)].filter(Boolean), Date.now());
      if (value) {
        log("linked", url.host);
        if (element.method == "get") {
          (
            element.elements._utm ||
            element.appendChild(Object.assign(document.createElement("input"), { type: "hidden", name: "_utm" }))
          ).value = value;
        } else {
          element[element.action ? "action" : "href"] = decorate(url.href, value);
        }
      }
    } catch {}
  };

  try {
    addEventListener("pagehide", () => {
      try {
        send(1);
      } catch {}
    });
    if (links[0]) for (const type of ["mousedown", "keydown", "click", "submit"]) addEventListener(type, link, true);
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
