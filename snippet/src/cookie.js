// The first-party cookie shared with the collector's request hook (collector cookie.py):
// base64url (RFC 4648 section 5, no padding) of UTF-8 JSON
//   {"v": visitor id, "t": [pending touches, oldest first], "l": {"id", "ts", "params"}}
// so the value stays within RFC 6265's cookie-octet and firewalls do not take it for SQL.
import { base64url, utf8 } from "./ids.js";

/** Encoded values stay under this length: browsers keep 4,096 bytes per cookie, attributes included. */
export const MAX_LENGTH = 3800;
/** URLs and referrers of pending touches are cut to this many characters. */
export const URL_LIMIT = 512;

/**
 * @typedef {{id: string, ts: number, url?: string, referrer?: string, params: Record<string, string>}} Touch
 * @typedef {{v?: string, t: Touch[], l?: {id: string, ts: number, params: Record<string, string>}}} CookieState
 */

/**
 * Decode a cookie value; `undefined` for anything without a visitor id. Throws on garbage.
 *
 * @param {string} value
 * @returns {CookieState | undefined}
 */
export function decode(value) {
  const state = JSON.parse(decodeURIComponent(escape(atob(value.replace(/-/g, "+").replace(/_/g, "/")))));
  if (state.v) return { ...state, t: state.t || [] };
}

/**
 * Encode `state`, its strings (the URLs and referrers of pending touches) cut to {@link URL_LIMIT}
 * characters, dropping pending touches t[1], t[2], ... (oldest first, never t[0]) until the
 * value is under {@link MAX_LENGTH} characters. Should t[0] alone not fit, it goes too (as in the
 * collector): a cookie past 4 KB would be refused whole, visitor id included. Changes `state.t`.
 *
 * @param {CookieState} state
 */
export function encode(state) {
  for (;;) {
    const json = JSON.stringify(state, (key, value) => (typeof value == "string" ? value.slice(0, URL_LIMIT) : value));
    const value = base64url(utf8(json));
    if (value.length < MAX_LENGTH || !state.t.length) return value;
    state.t.splice(state.t.length > 1 ? 1 : 0, 1);
  }
}

/**
 * The decoded cookie `name` from `document.cookie` (RFC 6265 section 5.4: "name=value; name2=..."),
 * or `undefined`: missing, not ours, or cookies blocked (reading them throws then). Never throws.
 *
 * @param {string} name
 */
export function readCookie(name) {
  try {
    return decode(("; " + document.cookie).split("; " + name + "=")[1].split(";")[0]);
  } catch {}
}

/**
 * Write cookie `name` for the whole site: SameSite=Lax, Secure on https (RFC 6265bis).
 *
 * @param {string} name
 * @param {CookieState} state
 * @param {number | string} maxAge seconds
 * @param {string} [domain] e.g. ".example.com" to share it with sub-domains
 */
export function writeCookie(name, state, maxAge, domain) {
  document.cookie =
    name + "=" + encode(state) + "; Path=/; SameSite=Lax; Max-Age=" + maxAge +
    (domain ? "; Domain=" + domain : "") + (location.protocol == "https:" ? "; Secure" : "");
}
