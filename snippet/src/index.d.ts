// Type declarations of the npm package "flask-utm-tracker" (src/index.js).

/** One marketing touch: the same object in localStorage, the cookie and the beacon. */
export interface Touch {
  /** 22 base64url characters from 16 random bytes; kept wherever the touch travels. */
  id: string;
  /** When it happened, epoch milliseconds (the client's clock). */
  ts: number;
  /** The landing URL (`location.href`); absent on a touch adopted from the collector's cookie. */
  url?: string;
  /** `document.referrer`, only when it is another site. */
  referrer?: string;
  /** The tracked parameters, lower-case names: utm_* (lower-cased values), click IDs, custom tags. */
  params: Record<string, string>;
}

/** The options of `init` and `createTracker`: the script tag's data-* attributes, camel-cased. */
export interface Options {
  /** The beacon URL. Default: "beacon" beside the script (IIFE), "/utm/beacon" (module). */
  endpoint?: string;
  /** The first-party cookie's name, also the localStorage key. Default "utm_tracker". */
  cookieName?: string;
  /** The cookie's Domain attribute, e.g. ".example.com" to share it with sub-domains. */
  cookieDomain?: string;
  /** The cookie's Max-Age in seconds. Default 31536000 (a year). */
  maxAge?: number | string;
  /** More parameter names to track, e.g. "ref,partner" or ["ref", "partner"]. */
  customTags?: string | string[];
  /** "auto" (or true): capture on history.pushState, replaceState and popstate too. */
  spa?: "auto" | boolean;
  /** "required": touches wait in memory until consent(true). */
  consent?: "required";
  /** "ignore": track even when navigator.globalPrivacyControl is true. */
  gpc?: "ignore";
  /** Hosts whose referrers are this site (their sub-domains too), e.g. "a.example.com,b.example.com". */
  siteHosts?: string | string[];
  /** Other sites' domains (sub-domains included) whose links and forms carry `_utm` when followed. */
  linkDomains?: string | string[];
  /** Present (any value): log each decision to the console (also `?utm_debug=1`). */
  debug?: unknown;
}

export interface Tracker {
  /** Read the current URL again (call it on SPA route changes); the new touch, or null. */
  capture(): Touch | null;
  /** What this browser holds. */
  touches(): { first: Touch | null; latest: Touch | null };
  /** Send what the collector has not acknowledged yet; resolves when it has answered, never rejects. */
  flush(): Promise<void>;
  /** true: store and send the touches held so far; false: drop them and what this browser stored,
   * and capture no more. Remembered in localStorage until the next call; GPC still wins. */
  consent(granted: boolean): Promise<void>;
}

/** A tracker of its own (no capture yet): for tests and pages that need two. */
export function createTracker(options?: Options, beacon?: string): Tracker;
/** Create the page's tracker and capture the landing page; later calls return the same tracker. */
export function init(options?: Options): Tracker;
export function capture(): Touch | null;
export function touches(): { first: Touch | null; latest: Touch | null };
export function flush(): Promise<void>;
export function consent(granted: boolean): Promise<void>;
