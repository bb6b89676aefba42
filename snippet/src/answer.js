// What an answer of the collector other than 2xx means for the touch it was about. The snippet
// loads this as the part snippet-answer.js only when such an answer arrives.

/**
 * 408, 429 and 5xx: kept, retried later. 403 (origin not allowed), 404 and 405 (no beacon
 * endpoint there), 415 (a proxy changed the body's type) mean a misconfiguration: kept, so fixing
 * it delivers the touch, and the first of the page warns in the console with the collector's own
 * error message ({"error": "..."}), or "check data-endpoint" when the answer is not the
 * collector's. Any other 4xx (400, 413, 422, ...): the collector will never accept it, dropped.
 *
 * @param {Response} response
 * @param {string} endpoint
 * @param {() => void} drop removes the touch from the queue
 * @param {unknown} warned whether this page warned already
 * @param {false | ((code: number) => void)} log the decision: 10 dropped, 11 kept (false: not logged)
 * @returns {unknown} whether this page warned now
 */
export function answer(response, endpoint, drop, warned, log) {
  const status = response.status;
  const misconfigured = [403, 404, 405, 415].includes(status);
  const kept = misconfigured || status > 499 || status == 408 || status == 429;
  if (log) log(kept ? 11 : 10);
  if (!kept) drop();
  if (misconfigured && !warned) {
    response
      .json()
      .then(
        (body) => body.error,
        () => "check data-endpoint",
      )
      .then((error) => console.warn(`flask-utm-tracker: ${endpoint} answered ${status}, touches kept: ${error}`));
    return 1;
  }
  return warned;
}
