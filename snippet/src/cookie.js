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
  const list = [...touches];
  for (;;) {
    const value = encodeText(
      JSON.stringify(wrap(list), function (key, value) {
        // JSON text starting "" (an empty string), {} (an empty object), n(ull) or u(ndefined) goes.
        return !list.includes(this)
          ? value
          : /^(""|{}|n|u)/.test(/** @type {string} */ (JSON.stringify(value)))
            ? undefined
            : key == "url" || key == "referrer"
              ? [...value].slice(0, URL_LIMIT).join("")
              : value;
      }),
    );
    if (value.length <= limit || !list[0]) return value;
    list.splice(/** @type {any} */ (list.length > 1), 1);
  }
}

/**
 * Decode a cookie value; `undefined` for anything without a visitor id. Throws on garbage.
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
 * Write cookie `name` for the whole site: SameSite=Lax, Secure on https (RFC 6265bis); an empty
 * `state` expires it (Max-Age=0).
 *
 * @param {string} name
 * @param {CookieState | undefined} state
 * @param {number | string} maxAge seconds
 * @param {string} [domain] e.g. ".example.com" to share it with sub-domains
 */
export function writeCookie(name, state, maxAge, domain) {
  document.cookie =
    name + "=" + (state ? encode(state) : "") + "; Path=/; SameSite=Lax; Max-Age=" + (state ? maxAge : 0) +
    (domain ? "; Domain=" + domain : "") + (location.protocol == "https:" ? "; Secure" : "");
}
