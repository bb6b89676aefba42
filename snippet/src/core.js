// The tracker: one factory returning the API. Every entry point sits in try/catch and every
// promise settles: a script on someone else's page must never throw into it (blocked storage or
// cookies, no fetch, the collector down or blocked). What only some pages need comes as parts
// that `use` provides (tracker.js bundles them; the script tag loads each only when needed):
// the linker, the SPA history hooks, and what an answer other than 2xx means. The decisions data-debug
// logs are compiled only into the debug build and the ES module, the options only some tags set
// (consent, GPC ignored, site hosts, custom tags) only into the full and debug builds and the ES
// module (flags.js).
import { cookieValue, cookieWriter, decode, encode } from "./cookie.js";
import { print } from "./debug.js";
import { DEBUG, FULL } from "./flags.js";
import { newId } from "./ids.js";
import { domainOf, list } from "./link.js";
import { parseQuery, TRACKED } from "./params.js";
import { isNewTouch, newer } from "./rule.js";

/**
 * @typedef {import("./cookie.js").Touch} Touch
 * @typedef {import("./cookie.js").CookieState} CookieState
 * @typedef {{v?: string, first?: Touch, latest?: Touch, queue: Touch[]}} Stored
 * @typedef {{
 *   endpoint?: string, cookieName?: string, cookieDomain?: string, maxAge?: number | string,
 *   customTags?: string | string[], spa?: "auto" | boolean, consent?: "required", gpc?: "ignore",
 *   siteHosts?: string | string[], linkDomains?: string | string[], debug?: unknown
 * }} Options
 * @typedef {(name: "link" | "spa" | "answer", ready: (part: any) => void) => void} Use
 */

/**
 * A URL without its query string and fragment.
 *
 * @param {string} url
 */
const bare = (url) => url.split(/[?#]/)[0];

/**
 * Create a tracker. The options are the script tag's data-* attributes, camel-cased.
 *
 * @param {Options} options
 * @param {string} endpoint the beacon URL when `options.endpoint` is not given
 * @param {Use} use calls `ready` with the part `name` once it is there
 */
export function createTracker(options, endpoint, use) {
  const name = (FULL && options.cookieName) || "utm_tracker";
  const remembered = name + "_consent";
  // The tracked names, and the custom tags.
  const names = FULL ? TRACKED.concat(list(options.customTags)) : TRACKED;
  const links = FULL ? list(options.linkDomains) : [];
  // Referrers from these hosts (and their sub-domains) are this site, as is the page's own host.
  const site = FULL ? list([options.linkDomains, options.siteHosts, options.cookieDomain]) : [];
  /** @type {Touch[]} touches waiting in memory for consent */
  let held = [];
  /** @type {Stored} the state, should localStorage not keep it */
  let memory = { queue: [] };
  let firstCapture = 1;
  /**
   * Whether the last capture found no cookie of ours (a new visitor, or a browser that dropped or
   * blocks it): localStorage is then taken to hold nothing of ours (the cookie outlives it unless
   * removed), and the state stays in memory, because the first use of localStorage in a page
   * costs main-thread CPU; the page stores it as it goes (pagehide). A capture that finds our
   * cookie reads and writes localStorage as before.
   */
  let lazy = 0;
  let warned = 0;
  /** @type {Promise<unknown>} */
  let sending = Promise.resolve();
  /**
   * A decision: an index of debug.js's WORDS and its details, printed with data-debug or
   * ?utm_debug=1 (the calls are `DEBUG && log(...)`, left out of the main build).
   * @type {(code: number, ...args: unknown[]) => unknown}
   */
  let log = () => {};
  // Global Privacy Control wins, unless the tag says data-gpc="ignore" (the collector's Jinja
  // helper does when UTM_TRACKER_RESPECT_GPC is off).
  let gpc = false;
  /** @type {string | undefined} a consent() choice as remembered in its cookie ("1", "-1") */
  let chosen;
  /** 1: granted, 0: waiting for consent(), -1: denied or GPC (nothing stored or sent). */
  let consent = FULL && options.consent == "required" ? 0 : 1;
  if (FULL) endpoint = options.endpoint || endpoint;

  /**
   * Read the cookies (a synchronous request to the browser process): ours, and the remembered
   * consent, which holds until revoked, whichever page or tab chose it; GPC wins.
   *
   * @returns {CookieState} what our cookie holds, `t` at least
   */
  const jar = () => {
    /** @type {string | undefined} */
    let all;
    /** @type {CookieState | undefined} */
    let state;
    try {
      all = document.cookie;
      // No cookie is the usual case for a new visitor: answered without throwing (with a
      // DevTools session on the page, a thrown error costs V8 a re-parse of the functions on
      // its stack, for their source positions).
      const value = cookieValue(all, name);
      // Garbage, or not ours (no visitor id): none.
      if (value) state = decode(value);
    } catch {}
    consent = gpc ? -1 : +(/** @type {string} */ (chosen = cookieValue(all, remembered))) || consent;
    return state || { t: [] };
  };

  /**
   * @param {CookieState} [state] what the cookie holds (none: what localStorage holds alone)
   * @returns {Stored} what localStorage holds, with the cookie's visitor id when it has one and
   *   the newer latest touch of the two
   */
  const load = (state) => {
    let stored = memory;
    try {
      // Nothing stored: 0, and no error thrown (they cost CPU).
      const parsed = !lazy && JSON.parse(/** @type {any} */ (localStorage.getItem(name) || 0));
      if (parsed.queue) stored = parsed;
    } catch {}
    // The collector answers with its own visitor id in the cookie: both halves use that one.
    if (state) {
      stored.v = state.v || stored.v;
      stored.latest = newer(stored.latest, /** @type {Touch} */ (state.l));
    }
    return stored;
  };

  /** @param {Stored} stored */
  const save = (stored) => {
    memory = stored;
    try {
      lazy || localStorage.setItem(name, JSON.stringify(stored));
    } catch {}
  };

  /** Write a cookie of ours (the state, or the remembered consent): (name, value; "" expires it). */
  const setCookie = cookieWriter((FULL && options.maxAge) || 31536000, FULL && options.cookieDomain);

  /**
   * Keep a new touch (localStorage, cookie); `stored` has adopted the cookie's visitor id and
   * latest touch (`load`).
   *
   * @param {Touch | null | undefined} touch the new touch, if any
   * @param {CookieState} state what the cookie holds
   * @param {Stored} stored what localStorage holds
   */
  const commit = (touch, state, stored) => {
    const visitor = (stored.v ||= newId());
    if (touch) {
      stored.queue.push(touch);
      state.t.push((stored.latest = touch));
      state.l = { id: touch.id, ts: touch.ts, params: /** @type {any} */ (touch.params) };
    }
    stored.first ||= stored.latest;
    save(stored);
    if (touch || state.v != visitor) {
      state.v = visitor;
      setCookie(name, encode(state));
    }
  };

  /**
   * The capture, given what the cookie holds.
   *
   * @param {CookieState} state
   */
  const take = (state) => {
    try {
      const first = firstCapture;
      firstCapture = 0;
      if (consent < 0) return DEBUG && log(gpc ? 2 : 3), null;
      lazy = !state.v;
      const stored = load(state);
      const latest = (FULL && held[held.length - 1]) || stored.latest;
      const [params, query] = parseQuery(location.search, names);
      // The referrer and the navigation type belong to the page load, not to SPA route changes.
      const referrer = first && document.referrer;
      // Its host (a referrer has no user info); without URL, whose first use costs CPU.
      const host = referrer && referrer.split("/")[2];
      // Kept as origin and path: its query and fragment may hold another site's secrets.
      const outside = host && host != location.host && !(FULL && domainOf(host.split(":")[0], site)) ? bare(referrer) : undefined;
      const now = Date.now();
      const fresh = isNewTouch(latest, params, !!outside, now);
      // Asked only when it matters (the first use of performance costs CPU): when the view would
      // be a touch and the browser has a history here, a stored touch or a remembered consent()
      // (consent(false) empties storage, but the collector keeps what was sent before it). With
      // neither a reload repeats nothing, so a new visitor's page never asks. Navigation Timing
      // 1's type (1: a reload) costs less than making Level 2's navigation entry; should a
      // browser drop it, reloads would only go unnoticed.
      const reload = fresh && first && (latest || chosen) && performance.navigation?.type == 1;
      /** @type {Touch | null} */
      // The landing URL without its fragment, and only the tracked parameters in its query.
      const touch = fresh && !reload ? { id: newId(), ts: now, url: bare(location.href) + (query && "?" + query), referrer: outside, params } : null;
      // 0 captured, 1 held for consent; ignored because 4 reload, 5 same as latest, 6 same site, 7 direct.
      DEBUG && log(touch ? (consent ? 0 : 1) : reload ? 4 : outside || Object.keys(params)[0] ? 5 : referrer ? 6 : 7, touch);
      if (FULL && !consent) {
        if (touch) held.push(touch);
      } else {
        commit(touch, state, stored);
        // From a task of its own, not the load's microtask checkpoint: the page goes first.
        // Every capture also retries what is still queued.
        setTimeout(flush);
      }
      return touch;
    } catch {
      return null;
    }
  };

  /**
   * Read the current URL again; returns the new touch, or null when this view makes none. One
   * read of the cookies (it asks the browser process) per capture, in `jar`, and of localStorage
   * unless that finds no cookie of ours (`lazy`). With a DevTools session on the page, Chromium
   * captures the stack of each cookie read with source positions (V8 re-parses each function on
   * it), so the read is kept out of the capture's body; visitors, with no session, pay nothing
   * for it (ARCHITECTURE.md, "Main-thread CPU").
   */
  const capture = () => take(jar());

  /**
   * Send every queued touch: with fetch, whose answer settles it or keeps it queued; with
   * sendBeacon on pagehide (its answer is never seen: the touches stay queued). Never throws:
   * where fetch (or sendBeacon) is missing the touches stay queued, and pagehide sends them.
   *
   * One body per touch, {"v", "touches": [touch]}, keeps every request within the collector's
   * limits (50 touches, 16 KiB) and makes each answer speak for exactly one touch. A string body
   * goes as text/plain;charset=UTF-8, CORS-safelisted (Fetch standard): no CORS preflight.
   * localStorage's visitor id is the cookie's as of the last capture. An answer does not read the
   * cookie again (each read is a synchronous request to the browser process): should the answer
   * have set the collector's own visitor id there, the next capture takes it. The collector stores
   * touches under its signed cookie's id (without a SECRET_KEY, under the body's, which its answer
   * then writes into the cookie).
   *
   * @param {unknown} [pagehide]
   */
  const send = (pagehide) => {
    try {
      const stored = load();
      return (
        consent > 0 &&
        Promise.all(
          stored.queue.map((touch) => {
            const body = JSON.stringify({ v: stored.v, touches: [touch] });
            return pagehide
              ? navigator.sendBeacon(endpoint, body)
              : (DEBUG && log(8, touch.id),
                fetch(endpoint, { method: "POST", body, keepalive: true, credentials: "include" }).then(
                  (response) => {
                    const drop = () => {
                      const now = load();
                      now.queue = now.queue.filter((queued) => queued.id != touch.id);
                      save(now);
                    };
                    // Any other answer is rare: the part "answer" says what it means.
                    if (response.status < 300) {
                      DEBUG && log(9, touch.id, response.status);
                      drop();
                    } else {
                      use("answer", (answer) => (warned = answer(response, endpoint, drop, warned, DEBUG && ((/** @type {number} */ code) => log(code, touch.id, response.status)))));
                    }
                  },
                  // A network or CORS error: kept (flush's catch settles the rejection).
                  ...(DEBUG ? [(/** @type {unknown} */ error) => log(11, touch.id, error)] : []),
                ));
          }),
        )
      );
    } catch {}
  };

  /** Send what is not yet acknowledged; resolves once the collector has answered (never rejects). */
  const flush = () => (sending = sending.then(() => send()).catch(() => {}));

  try {
    if (DEBUG && (options.debug != null || location.search.includes("utm_debug=1"))) log = print;
    // Hidden (a tab switched away from, a page being left, before pagehide, or about to be
    // discarded): a page that kept its state in memory stores it, if it has one and consent
    // still holds (another tab may have refused since); should another tab have stored its own
    // meanwhile, that one stays.
    addEventListener("visibilitychange", () => (jar(), lazy && memory.v && consent > 0 && save(load((lazy = 0)))));
    addEventListener("pagehide", () => send(1));
    if (FULL && links[0]) {
      use("link", (linker) =>
        // The touches a link carries: the first, then the cookie's pending ones (consent given).
        linker(links, () => consent > 0 && [load().first, ...jar().t], log),
      );
    }
    if (FULL && /^(auto|true)$/.test(/** @type {any} */ (options.spa))) use("spa", (spa) => spa(capture));
    // The remembered consent() choice is read with the cookie, at the first capture.
    gpc = (!FULL || options.gpc != "ignore") && navigator.globalPrivacyControl === true;
  } catch {}

  return {
    capture,
    /** What this browser holds: the first and the latest touch (or null). */
    touches() {
      const stored = load();
      return { first: stored.first || null, latest: stored.latest || null };
    },
    flush,
    /**
     * Grant consent (store and send the touches held so far) or deny it (drop them and what this
     * browser stored, capture no more). Remembered in a cookie until the next call; GPC wins.
     *
     * @param {boolean} granted
     */
    consent(granted) {
      try {
        if (!gpc) {
          consent = granted ? 1 : -1;
          // First: jar() below reads it back.
          setCookie(remembered, consent);
          if (granted) {
            if (FULL) {
              const state = jar();
              const stored = load(state);
              // Each held touch in turn, then none (the visitor id adopted, should none be held).
              for (const touch of [...held, null]) commit(touch, state, stored);
            }
          } else {
            memory = { queue: [] };
            setCookie(name, "");
            localStorage.removeItem(name);
          }
        }
      } catch {}
      if (FULL) held = [];
      return flush();
    },
  };
}
