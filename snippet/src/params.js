// Which query parameters make a touch, and how their names and values are normalised.
// The list is collector/flask_utm_tracker/data/params.json, shared with the Python collector
// (params.py) so both halves track the same names; esbuild inlines it (build.mjs turns each list
// into one comma-separated string, which joins the same as the array node reads).
import list from "../../collector/flask_utm_tracker/data/params.json" with { type: "json" };

export const TRACKED = (list.utm + "," + list.click_ids).split(",");

/**
 * The tracked parameters of a query string, and the query string with only them.
 *
 * Names match case-insensitively and are kept lower-case; the first non-empty value of a name
 * wins; values are trimmed and cut to `max_value_length` characters (the collector cuts them again);
 * utm_* values are lower-cased, click IDs and custom tags kept as sent. The query kept has the
 * parts (`name=value`) whose name is tracked, as written and in their order (as the collector's
 * `strip_query` keeps them): anything else a landing URL carries (an OAuth `code`, a reset token, a
 * session id) is never stored or sent.
 *
 * @param {string} query `location.search`: a query string with its "?", or ""
 * @param {string[]} names the lower-case names to keep: {@link TRACKED}, and the custom tags
 *   (`data-custom-tags`) when there are any
 * @returns {[Record<string, string>, string]} the parameters, and the query kept (no "?")
 */
export function parseQuery(query, names) {
  /** @type {Record<string, string>} */
  const params = {};
  const kept = [];
  // Part by part, each decoded by URLSearchParams ("+" a space, percent-encoded UTF-8), so the
  // parts kept stay as written.
  for (const part of query.slice(1).split("&")) {
    for (const [name, raw] of new URLSearchParams(part)) {
      const key = name.trim().toLowerCase();
      if (names.includes(key)) {
        kept.push(part);
        const value = raw.trim().slice(0, list.max_value_length);
        if (value && !params[key]) params[key] = key.startsWith("utm_") ? value.toLowerCase() : value;
      }
    }
  }
  return [params, kept.join("&")];
}

/**
 * The tracked parameters of a query string (see {@link parseQuery}).
 *
 * @param {string} query
 * @param {string[]} [tags]
 */
export const parseParams = (query, tags = []) => parseQuery(query, TRACKED.concat(tags))[0];
