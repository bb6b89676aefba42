// What goes to the collector's beacon endpoint, and what its answer means for the queue.

/**
 * The request bodies for the queued touches: one `{"v", "touches": [touch]}` per touch, which
 * keeps every body within the collector's limits (50 touches, 16 KiB) and makes each answer
 * speak for exactly one touch. A queue is one touch long but after an outage.
 *
 * @param {string} visitor the visitor id `v`
 * @param {import("./cookie.js").Touch[]} queue
 * @returns {[body: string, id: string][]}
 */
export const bodies = (visitor, queue) =>
  queue.map((touch) => [JSON.stringify({ v: visitor, touches: [touch] }), touch.id]);

/**
 * Whether `status` means the page or the collector is misconfigured (403: origin not allowed,
 * 404 or 405: no beacon endpoint there, 415: a proxy changed the body's type): the touch stays
 * queued, to be delivered once the configuration is fixed, and the console says so once.
 *
 * @param {number} status
 */
export const misconfigured = (status) => /^(40[345]|415)$/.test(String(status));

/**
 * Whether a touch answered with `status` leaves the queue: yes on 2xx (stored) and on a 4xx the
 * collector will never accept (400, 413, 422, ...); no on 408, 429 and 5xx (retry later) and
 * when {@link misconfigured}.
 *
 * @param {number} status
 */
export const settled = (status) => status < 300 || (status < 500 && status != 408 && status != 429 && !misconfigured(status));
