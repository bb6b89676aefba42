// The new-touch rule (snippet/src/rule.js); the tracker tests cover it end to end.
import assert from "node:assert/strict";
import { test } from "node:test";
import { isNewTouch, newer, sameParams, SESSION } from "../../snippet/src/rule.js";

const now = 1_700_000_000_000;
const latest = { id: "a", ts: now - 60_000, params: { utm_source: "news", utm_medium: "email" } };

test("campaign parameters make a touch unless identical to the latest (in any order)", () => {
  assert.equal(isNewTouch(undefined, { gclid: "x" }, false, now), true);
  assert.equal(isNewTouch(latest, { utm_medium: "email", utm_source: "news" }, false, now), false);
  assert.equal(isNewTouch(latest, { utm_source: "news" }, false, now), true);
  assert.equal(isNewTouch(latest, { utm_source: "news", utm_medium: "email", gclid: "g" }, false, now), true);
  assert.equal(isNewTouch({ ...latest, ts: now - 10 * SESSION }, latest.params, true, now), false);
});

test("a referral makes a touch only without a latest one or after a 30-minute session", () => {
  assert.equal(isNewTouch(undefined, {}, true, now), true);
  assert.equal(isNewTouch(latest, {}, true, now), false);
  assert.equal(isNewTouch({ ...latest, ts: now - SESSION }, {}, true, now), false);
  assert.equal(isNewTouch({ ...latest, ts: now - SESSION - 1 }, {}, true, now), true);
});

test("a direct visit makes no touch", () => {
  assert.equal(isNewTouch(undefined, {}, false, now), false);
  assert.equal(isNewTouch({ ...latest, ts: 0 }, {}, false, now), false);
});

test("a referral touch (params {}) is not equal to a campaign", () => {
  assert.equal(isNewTouch({ id: "r", ts: now, params: {} }, { utm_source: "x" }, false, now), true);
  assert.equal(sameParams({}, undefined), true);
});

test("newer picks by ts and tolerates missing touches", () => {
  const a = { ts: 1 };
  const b = { ts: 2 };
  assert.equal(newer(a, b), b);
  assert.equal(newer(b, a), b);
  assert.equal(newer(undefined, a), a);
  assert.equal(newer(a, undefined), a);
  assert.equal(newer(undefined, undefined), undefined);
});
