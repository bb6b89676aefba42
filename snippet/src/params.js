// Which query parameters make a touch, and how their names and values are normalised.
// The list is collector/flask_utm_tracker/data/params.json, shared with the Python collector
// (params.py) so both halves track the same names; esbuild inlines it (build.mjs turns each list
// into one comma-separated string, which joins the same as the array node reads).
import list from "../../collector/flask_utm_tracker/data/params.json" with { type: "json" };

const TRACKED = (list.utm + "," + list.click_ids).split(",");

/**
 * The tracked parameters of a query string.
 *
 * Names match case-insensitively and are kept lower-case; the first non-empty value of a name
 * wins; values are trimmed and cut to `max_value_length` characters (the collector cuts them again);
 * utm_* values are lower-cased, click IDs and custom tags kept as sent.
 *
 * @param {string} query a query string, usually `location.search` (URLSearchParams over it costs
 *   less than parsing the whole URL)
 * @param {string[]} [tags] extra lower-case names to keep (`data-custom-tags`)
 * @returns {Record<string, string>}
 */
export function parseParams(query, tags = []) {
  const names = TRACKED.concat(tags);
  /** @type {Record<string, string>} */
  const params = {};
  for (const [name, raw] of new URLSearchParams(query)) {
    const key = name.trim().toLowerCase();
    const value = raw.trim().slice(0, list.max_value_length);
    if (value && !params[key] && names.includes(key)) {
      params[key] = key.startsWith("utm_") ? value.toLowerCase() : value;
    }
  }
  return params;
}
