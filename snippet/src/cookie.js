// The first-party cookie shared with the collector's request hook:
// base64url (RFC 4648 section 5, no padding) of UTF-8 JSON
//   {"v": visitor id, "t": [pending touches, oldest first], "l": {"id", "ts", "params"}}
// so the value stays within RFC 6265's cookie-octet and firewalls do not take it for SQL.
// The size rule (`fit`) is shared with the collector and with the link token; its cases are the
// fixture tests/fixtures/cookie-rule.json, which both test suites read.
import { decodeText, encodeText } from "./ids.js";

/** Encoded values are at most this long: browsers keep 4,096 bytes per cookie, attributes included. */
export const MAX_LENGTH = 3800;
/** The `url` and `referrer` of a pending touch are cut to this many characters (code points). */
export const URL_LIMIT = 512;

/**
 * @typedef {{id: string, ts: number, url?: string, referrer?: string, params?: Record<string, string>}} Touch
 * @typedef {{v?: string, t: Touch[], l?: {id: string, ts: number, params: Record<string, string>}}} CookieState
 */

/**
 * The size rule: base64url JSON of `wrap(touches)` at most `limit` characters long. The touches
 * are compacted as written (keys whose value is null, "" or {} left out, `url` and `referrer` cut
 * to {@link URL_LIMIT} code points, as Python slices a str); while the value is too long the touch
 * at index 1 goes (the oldest after the first), and should the first alone not fit, it goes too.
 *
 * @param {Touch[]} touches
 * @param {number} limit
 * @param {(touches: Touch[]) => unknown} wrap what to encode around the touches kept
 */
export function fit(touches, limit, wrap) {
  // Compacted once, without a JSON.stringify replacer (a call into script for every key).
  const list = touches.map((touch) => {
    /** @type {Record<string, any>} */
    const kept = {};
    for (const [key, value] of Object.entries(touch)) {
      if (value != null && value !== "" && JSON.stringify(value) != "{}") {
        kept[key] = key == "url" || key == "referrer" ? [...value].slice(0, URL_LIMIT).join("") : value;
      }
    }
    return /** @type {Touch} */ (kept);
  });
  let value;
  while ((value = encodeText(JSON.stringify(wrap(list)))).length > limit && list[0]) list.splice(/** @type {any} */ (list.length > 1), 1);
  return value;
}

/**
 * Decode a cookie value (`t` an empty list when left out or null); `undefined` for anything
 * without a visitor id. Throws on garbage.
 *
 * @param {string} value
 * @returns {CookieState | undefined}
 */
export function decode(value) {
  const state = JSON.parse(decodeText(value));
  if (state.v) return (state.t ||= []), state;
}

/**
 * Encode `state` by the size rule: `t` left out when empty, at most `limit` characters.
 *
 * @param {CookieState} state
 * @param {number} [limit]
 */
export const encode = (state, limit = MAX_LENGTH) => fit(state.t, limit, (t) => ({ ...state, t: t[0] ? t : undefined }));

/**
 * The value of cookie `name` in `jar` (`document.cookie`: RFC 6265 section 5.4, "name=value;
 * name2=..."), or `undefined`.
 *
 * @param {string | undefined} jar (undefined: none)
 * @param {string} name
 */
export const cookieValue = (jar, name) => ("; " + jar).split("; " + name + "=")[1]?.split(";")[0];

/**
 * A writer of cookies for the whole site: SameSite=Lax, Secure on https (RFC 6265bis), with the
 * given Max-Age and Domain; it writes cookie `name` with `value`, which when empty expires it
 * (Max-Age=0). It never throws (where cookies are blocked, writing them throws).
 *
 * @param {number | string} maxAge seconds
 * @param {string} [domain] e.g. ".example.com" to share it with sub-domains
 * @returns {(name: string, value: string | number) => void} value: cookie-octets only (an
 *   {@link encode}d state, a number)
 */
export const cookieWriter = (maxAge, domain) => (name, value) => {
  try {
    document.cookie =
      name + "=" + value + ";path=/;samesite=lax;max-age=" + (value ? maxAge : 0) +
      (domain ? ";domain=" + domain : "") + (location.protocol == "https:" ? ";secure" : "");
  } catch {}
};
