// Cross-domain links: the `_utm` token that carries this browser's touches to a site on another
// registrable domain (`data-link-domains`), whose collector adds them to that browser's own
// cookie. The format is defined in ARCHITECTURE.md, "The link token". The snippet loads the
// linker (`linker`) as the part snippet-link.js only on pages that set data-link-domains.
import { fit } from "./cookie.js";

/** Tokens are at most this many characters, well within any URL limit. */
export const TOKEN_LIMIT = 1500;

/**
 * A list option ("a.com, b.io" or ["a.com", "b.io"], or a list of those, missing ones
 * ignored): lower-case entries.
 *
 * @param {unknown} value
 * @returns {string[]}
 */
export const list = (value) => (value && String(value).toLowerCase().match(/[^\s,]+/g)) || [];

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

/**
 * Listen for the visitor following a link or a form to a link domain other than this page's:
 * `_utm` goes on the link's href or the form's action (for a GET form, whose action loses its
 * query on submission, a hidden input).
 *
 * @param {string[]} links the link domains
 * @param {() => any} carried the browser's first touch then the cookie's pending touches (entries
 *   may be missing or repeated), or false without consent
 * @param {(code: number, ...args: unknown[]) => void} log
 */
export function linker(links, carried, log) {
  /** @param {Event} event */
  const follow = (event) => {
    try {
      const element = /** @type {any} */ (event.target).closest("a,area,form");
      const url = new URL(element.action ?? element.href);
      const domain = domainOf(url.hostname, links);
      /** @type {import("./cookie.js").Touch[]} */
      const touches = carried();
      const value =
        touches &&
        domain &&
        domain != domainOf(location.hostname, links) &&
        // Each id once, the first touch first.
        token(
          touches.filter((touch, i) => touch && touches.findIndex((other) => other?.id == touch.id) == i),
          Date.now(),
        );
      if (value) {
        log(12, url.host);
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
  for (const type of ["mousedown", "keydown", "click", "submit"]) addEventListener(type, follow, true);
}
