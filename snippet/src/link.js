// Cross-domain links: the `_utm` token that carries this browser's touches to a site on another
// registrable domain (`data-link-domains`), whose collector adds them to that browser's own
// cookie. The format is defined in ARCHITECTURE.md, "The link token".
import { fit } from "./cookie.js";

/** Tokens are at most this many characters, well within any URL limit. */
export const TOKEN_LIMIT = 1500;

/**
 * A list option ("a.com, b.io" or ["a.com", "b.io"]): lower-case entries.
 *
 * @param {unknown} value
 */
export const list = (value) => String(value || "").toLowerCase().match(/[^\s,]+/g) || [];

/**
 * The entry of `domains` that `host` is or is a sub-domain of (a leading dot is ignored), or
 * undefined.
 *
 * @param {string} host a URL's hostname
 * @param {string[]} domains e.g. ["brand.com", ".example.com"]
 */
export const domainOf = (host, domains) =>
  domains.find((domain) => ("." + host).endsWith(domain[0] == "." ? domain : "." + domain));

/**
 * The token for `touches` (the first touch, then the pending ones, oldest first), made at `at`
 * (epoch ms): base64url of UTF-8 JSON {"at", "t"} by the cookie's size rule within
 * {@link TOKEN_LIMIT} characters; undefined when no touch fits.
 *
 * @param {import("./cookie.js").Touch[]} touches
 * @param {number} at
 */
export function token(touches, at) {
  let kept = 0;
  const value = fit(touches, TOKEN_LIMIT, (t) => ((kept = t.length), { at, t }));
  return kept ? value : undefined;
}

/**
 * `href` with `_utm=value` in its query, replacing one already there; the other parameters are
 * left as written (not re-encoded: a signed URL stays valid).
 *
 * @param {string} href an absolute URL
 * @param {string} value
 */
export function decorate(href, value) {
  const url = new URL(href);
  const rest = url.search.replace(/[?&]_utm=[^&]*/g, "").slice(1);
  url.search = rest + (rest && "&") + "_utm=" + value;
  return url.href;
}
