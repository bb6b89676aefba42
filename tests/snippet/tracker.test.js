// The tracker end to end against a fake browser: the new-touch rule with adoption of the
// collector's cookie, storage, the delivery queue, consent, GPC, SPA capture, and never throwing.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { createTracker } from "../../snippet/src/tracker.js";
import { Browser, settle } from "./browser.js";

afterEach(() => Browser.reset());

const LANDING = "https://www.example.com/pricing?utm_source=Newsletter&utm_medium=email&utm_campaign=Spring&gclid=Cj0KCQ";
const WEBMAIL = "https://mail.google.com/";
const PARAMS = { utm_source: "newsletter", utm_medium: "email", utm_campaign: "spring", gclid: "Cj0KCQ" };
const MINUTE = 60_000;

/**
 * A page load: the page before goes (pagehide, its listeners removed), then install `browser` with
 * `url` and `referrer`, make a tracker, capture, let it send.
 */
async function load(browser, url, referrer = "", options = {}) {
  browser.leave();
  browser.listeners = {};
  Object.assign(browser, { url, referrer });
  browser.install();
  const tracker = createTracker(options);
  const touch = plain(tracker.capture());
  await settle();
  return { tracker, touch };
}

/** `value` as it travels: through JSON (a touch without a referrer has `referrer: undefined`). */
const plain = (value) => (value == null ? value : JSON.parse(JSON.stringify(value)));

test("a campaign landing makes a touch: cookie, beacon, and localStorage once the page goes", async () => {
  const browser = new Browser();
  const { tracker, touch } = await load(browser, LANDING, WEBMAIL);
  assert.match(touch.id, /^[A-Za-z0-9_-]{22}$/);
  assert.deepEqual(touch.params, PARAMS);
  assert.equal(touch.url, LANDING);
  assert.equal(touch.referrer, WEBMAIL);
  assert.ok(Math.abs(touch.ts - Date.now()) < 5000);
  assert.deepEqual(plain(tracker.touches()), { first: touch, latest: touch });

  const cookie = browser.cookie();
  assert.match(cookie.v, /^[A-Za-z0-9_-]{22}$/);
  assert.deepEqual(cookie.t, [touch]);
  assert.deepEqual(cookie.l, { id: touch.id, ts: touch.ts, params: PARAMS });

  assert.equal(browser.requests.length, 1);
  const [request] = browser.requests;
  assert.equal(request.url, "/utm/beacon");
  assert.equal(request.init.method, "POST");
  assert.equal(request.init.keepalive, true);
  assert.equal(request.init.credentials, "include");
  assert.equal(typeof request.init.body, "string", "a string body: text/plain, no CORS preflight");
  assert.deepEqual(request.body, { v: cookie.v, touches: [touch] });

  // A new visitor's page began without our cookie: nothing of ours can be in localStorage, whose
  // first use in a page costs main-thread CPU, so the page keeps its state in memory until it goes.
  assert.equal(browser.storageUses, 0);
  browser.leave();
  const stored = browser.stored();
  assert.equal(stored.v, cookie.v);
  assert.deepEqual(stored.first, touch);
  assert.deepEqual(stored.latest, touch);
  assert.deepEqual(stored.queue, [], "acknowledged by a 204");
  assert.equal(browser.beacons.length, 0, "nothing left to send");
});

test("a page that began without our cookie stores its state as it goes, unless another tab stored one meanwhile", async () => {
  const browser = new Browser();
  await load(browser, LANDING, WEBMAIL);
  const other = { v: "otherTab", first: { id: "o", ts: 1 }, latest: { id: "o", ts: 1 }, queue: [] };
  browser.storage.set("utm_tracker", JSON.stringify(other));
  browser.leave();
  assert.deepEqual(browser.stored(), other);
});

test("hidden (a tab switched away from, a page a phone may discard unannounced), such a page stores its state at once", async () => {
  const browser = new Browser({ collector: () => 503 });
  const { touch } = await load(browser, LANDING, WEBMAIL);
  assert.equal(browser.storage.size, 0);
  browser.dispatch("visibilitychange");
  assert.deepEqual(browser.stored().first, touch);
  assert.deepEqual(browser.stored().queue.map((t) => t.id), [touch.id], "not acknowledged: kept for a later page");
  // Shown and hidden again: stored once; from now on the page stores as it goes.
  const uses = browser.storageUses;
  browser.dispatch("visibilitychange");
  assert.equal(browser.storageUses, uses);
});

test("a refusal in another tab holds for a page that kept its state in memory: nothing stored or sent as it goes", async () => {
  const browser = new Browser({ collector: () => 503 });
  const landing = await load(browser, LANDING, WEBMAIL);
  assert.ok(landing.touch);
  const hidden = browser.listeners;
  // Another tab of the same site: the visitor refuses there.
  browser.listeners = {};
  const other = createTracker();
  other.capture();
  await other.consent(false);
  assert.equal(browser.jar.get("utm_tracker_consent"), "-1");
  // The landing tab goes.
  const beacons = browser.beacons.length;
  for (const type of ["visibilitychange", "pagehide"]) for (const listener of hidden[type] || []) listener({ type });
  assert.equal(browser.storage.size, 0, "nothing stored after the refusal");
  assert.equal(browser.beacons.length, beacons, "nor sent");
  assert.equal(landing.tracker.capture(), null, "nor captured");
});

test("a returning visitor's page reads and writes localStorage as it captures", async () => {
  const browser = new Browser();
  const first = (await load(browser, LANDING, WEBMAIL)).touch;
  const uses = browser.storageUses;
  const second = (await load(browser, "https://www.example.com/?utm_source=twitter")).touch;
  assert.ok(browser.storageUses > uses);
  assert.deepEqual(browser.stored().first, first);
  assert.deepEqual(browser.stored().latest, second);
});

test("an internal referrer is left out of the touch; a direct visit makes none", async () => {
  const browser = new Browser();
  const { touch } = await load(browser, LANDING, "https://www.example.com/blog");
  assert.equal(touch.referrer, undefined);
  assert.equal(JSON.stringify(browser.requests[0].body).includes("referrer"), false);

  const direct = new Browser();
  assert.equal((await load(direct, "https://www.example.com/")).touch, null);
  assert.equal(direct.requests.length, 0);
});

test("the same campaign again is no new touch; another one is, and the first touch stays", async () => {
  const browser = new Browser();
  const first = (await load(browser, LANDING, WEBMAIL)).touch;
  assert.equal((await load(browser, LANDING.replace("/pricing", "/about"))).touch, null);
  const second = (await load(browser, "https://www.example.com/?utm_source=twitter&utm_medium=social")).touch;
  assert.ok(second);
  assert.deepEqual(browser.stored().first, first);
  assert.deepEqual(browser.stored().latest, second);
  assert.deepEqual(browser.cookie().t.map((t) => t.id), [first.id, second.id]);
  assert.equal(browser.requests.length, 2);
});

test("reloading a landing page makes no touch, even one with new parameters", async () => {
  const browser = new Browser();
  assert.ok((await load(browser, LANDING, WEBMAIL)).touch);
  // Another tab's campaign since: the landing page's parameters are no longer the latest touch's.
  assert.ok((await load(browser, "https://www.example.com/?utm_source=other")).touch);
  browser.navigation = "reload";
  assert.equal((await load(browser, LANDING, WEBMAIL)).touch, null);
  assert.equal(browser.requests.length, 2);
  assert.equal(browser.stored().queue.length, 0);
});

test("without crypto.getRandomValues no touch is made, nothing is stored or sent, and nothing throws", async (t) => {
  t.mock.method(globalThis.crypto, "getRandomValues", () => {
    throw new Error("no crypto");
  });
  const browser = new Browser();
  const { tracker, touch } = await load(browser, LANDING, WEBMAIL);
  assert.equal(touch, null);
  assert.equal(tracker.capture(), null);
  await tracker.consent(true);
  // Only the choice is written.
  assert.deepEqual([browser.requests.length, browser.cookieWrites.filter((w) => w.startsWith("utm_tracker=")).length], [0, 0]);
  browser.leave();
  assert.equal(browser.stored()?.queue.length ?? 0, 0);
});

test("revoked then granted again, a reload of the landing page makes no second touch", async () => {
  const browser = new Browser();
  const { tracker, touch } = await load(browser, LANDING, WEBMAIL);
  assert.ok(touch);
  await tracker.consent(false);
  await tracker.consent(true);
  // No touch kept now, only the choice; the collector still has the touch sent before.
  assert.equal(tracker.touches().latest, null);
  assert.equal(browser.jar.get("utm_tracker_consent"), "1");
  browser.navigation = "reload";
  assert.equal((await load(browser, LANDING, WEBMAIL)).touch, null);
  assert.equal(browser.requests.length, 1);
});

test("with nothing stored a view is a touch, reload or not: a new visitor's page never asks performance", async () => {
  for (const navigation of ["navigate", "reload"]) {
    const browser = new Browser({ navigation });
    const { touch } = await load(browser, LANDING, WEBMAIL);
    assert.deepEqual(touch.params, PARAMS, navigation);
    assert.equal(browser.navigationReads, 0, "its first use costs main-thread CPU");
    assert.equal(browser.requests.length, 1);
  }
});

test("a referral makes a touch only without a latest touch or after 30 minutes", async (t) => {
  t.mock.timers.enable({ apis: ["Date"], now: 1_700_000_000_000 });
  const browser = new Browser();
  const referral = (await load(browser, "https://www.example.com/", "https://news.ycombinator.com/item?id=1")).touch;
  assert.deepEqual(referral.params, {});
  assert.equal(referral.referrer, "https://news.ycombinator.com/item", "origin and path: no query");
  t.mock.timers.tick(29 * MINUTE);
  assert.equal((await load(browser, "https://www.example.com/", "https://www.reddit.com/")).touch, null);
  t.mock.timers.tick(31 * MINUTE);
  assert.ok((await load(browser, "https://www.example.com/", "https://www.reddit.com/")).touch);
  assert.equal(browser.stored().first.id, referral.id);
});

test("adoption: a touch the collector already wrote into the cookie for this page view is not made twice", async () => {
  const browser = new Browser();
  const server = { id: "serverTouch_123", ts: Date.now() - 1000, params: PARAMS };
  browser.setCookie({ v: "visitorFromServer", t: [{ ...server, url: LANDING }], l: server });
  const { tracker, touch } = await load(browser, LANDING, WEBMAIL);
  assert.equal(touch, null);
  assert.equal(browser.requests.length, 0);
  assert.equal(browser.stored().v, "visitorFromServer");
  assert.deepEqual(tracker.touches(), { first: server, latest: server });
  // The cookie was left as the collector wrote it.
  assert.equal(browser.cookieWrites.length, 0);
  assert.deepEqual(browser.cookie().t.map((t) => t.id), ["serverTouch_123"]);
});

test("adoption: the cookie's newer latest touch counts against localStorage's older one", async () => {
  const browser = new Browser();
  const old = (await load(browser, "https://www.example.com/?utm_source=old")).touch;
  const server = { id: "srv", ts: Date.now() + 1, params: PARAMS };
  browser.setCookie({ ...browser.cookie(), l: server });
  assert.equal((await load(browser, LANDING)).touch, null);
  assert.deepEqual(browser.stored().latest, server);
  assert.equal(browser.stored().first.id, old.id);
});

test("the snippet adopts the cookie's visitor id and appends to its pending touches", async () => {
  const browser = new Browser();
  const pending = { id: "earlier", ts: 1, url: "https://app.example.com/", params: { utm_source: "x" } };
  browser.setCookie({ v: "serverVisitor", t: [pending], l: { id: "earlier", ts: 1, params: pending.params } });
  const { touch } = await load(browser, LANDING);
  assert.equal(browser.requests[0].body.v, "serverVisitor");
  const cookie = browser.cookie();
  assert.equal(cookie.v, "serverVisitor");
  assert.deepEqual(cookie.t.map((t) => t.id), ["earlier", touch.id]);
  assert.equal(cookie.l.id, touch.id);
});

test("the cookie's visitor id wins: the collector's answer sets its own, and localStorage and later beacons follow", async () => {
  const browser = new Browser();
  // The collector answers a beacon with the visitor cookie holding its own (signed) visitor id.
  browser.collector = () => (browser.setCookie({ ...browser.cookie(), v: "serverIssued" }), 204);
  const { tracker, touch } = await load(browser, LANDING);
  assert.notEqual(browser.requests[0].body.v, "serverIssued");
  assert.equal(browser.cookie().t[0].id, touch.id, "the cookie keeps its pending touch");
  browser.collector = () => 503;
  browser.url = "https://www.example.com/?utm_source=next";
  tracker.capture();
  assert.equal(browser.stored().v, "serverIssued", "taken by the next capture");
  await tracker.flush();
  // The answer was handled without reading the cookie again: the touch acknowledged (only the
  // next one is sent again), and the id taken by the next capture.
  assert.ok(browser.requests.length > 1);
  for (const request of browser.requests.slice(1)) {
    assert.deepEqual([request.body.v, request.body.touches[0].params], ["serverIssued", { utm_source: "next" }]);
  }
  assert.equal(browser.cookie().v, "serverIssued");
  // Without a cookie (expired, or blocked) localStorage's id stays.
  browser.jar.clear();
  await tracker.flush();
  assert.equal(browser.requests.at(-1).body.v, "serverIssued");
});

test("the queue: 2xx removes, 5xx / 429 / 408 / misconfigured / network errors keep, other 4xx drop", async () => {
  for (const [answer, kept] of [
    [200, false], [204, false], [400, false], [413, false], [422, false],
    [408, true], [429, true], [500, true], [503, true], [new TypeError("Failed to fetch"), true],
    [403, true], [404, true], [405, true], [415, true],
  ]) {
    const browser = new Browser({ collector: () => answer });
    const { touch } = await load(browser, LANDING);
    browser.leave();
    assert.deepEqual(browser.stored().queue.map((t) => t.id), kept ? [touch.id] : [], `answer ${answer}`);
    assert.equal(browser.beacons.length, kept ? 1 : 0, "what is queued goes by sendBeacon too");
  }
});

test("a queued touch is retried on the next page load and by flush(), once acknowledged it stops", async () => {
  let status = 503;
  const browser = new Browser({ collector: () => status });
  const { tracker, touch } = await load(browser, LANDING);
  await tracker.flush();
  assert.equal(browser.requests.length, 2);
  await load(browser, "https://www.example.com/about");
  assert.equal(browser.requests.length, 3, "retried on the next page load");
  status = 204;
  const next = await load(browser, "https://www.example.com/contact");
  assert.deepEqual(browser.requests.map((r) => r.body.touches[0].id), Array(4).fill(touch.id));
  assert.deepEqual(browser.stored().queue, []);
  await next.tracker.flush();
  assert.equal(browser.requests.length, 4, "nothing left to send");
});

test("one body per touch: within 50 touches and 16 KiB whatever the queue holds", async () => {
  const browser = new Browser({ collector: () => 503 });
  const long = "x".repeat(255);
  for (let i = 0; i < 60; i++) await load(browser, `https://www.example.com/?gclid=${i}${long}&fbclid=${long}&msclkid=${long}`);
  browser.collector = () => 204;
  browser.requests = [];
  await load(browser, "https://www.example.com/");
  assert.equal(browser.requests.length, 60);
  for (const request of browser.requests) {
    assert.ok(request.body.touches.length <= 50);
    assert.ok(Buffer.byteLength(request.init.body) < 16384);
  }
  assert.deepEqual(browser.stored().queue, []);
});

test("pagehide sends the queue with sendBeacon; it stays queued until a fetch is acknowledged", async () => {
  const browser = new Browser({ collector: () => 503 });
  const { touch } = await load(browser, LANDING);
  browser.leave();
  assert.deepEqual(browser.beacons.map((b) => b.body), [{ v: browser.stored().v, touches: [touch] }]);
  assert.equal(browser.beacons[0].url, "/utm/beacon");
  assert.equal(browser.stored().queue.length, 1);
});

test("flush() resolves, never rejects, and sends nothing when there is nothing to send", async () => {
  const browser = new Browser().install();
  const tracker = createTracker();
  await tracker.flush();
  assert.equal(browser.requests.length, 0);
});

test("options: endpoint, cookie name (also the storage key), domain, max-age, custom tags", async () => {
  const browser = new Browser();
  const { touch } = await load(browser, "https://www.example.com/?REF=Bob&Partner=Acme&x=1", "", {
    endpoint: "https://app.example.com/utm/beacon",
    cookieName: "attrib",
    cookieDomain: ".example.com",
    maxAge: "86400",
    customTags: "ref, partner",
  });
  assert.deepEqual(touch.params, { ref: "Bob", partner: "Acme" });
  assert.equal(browser.requests[0].url, "https://app.example.com/utm/beacon");
  assert.ok(browser.cookie("attrib"));
  assert.match(browser.cookieWrites[0], /^attrib=.*;max-age=86400;domain=\.example\.com;secure$/);
  browser.leave();
  assert.ok(browser.stored("attrib"));
});

test("GPC: nothing stored or sent, unless data-gpc=\"ignore\"", async () => {
  const browser = new Browser({ gpc: true });
  const { tracker, touch } = await load(browser, LANDING, WEBMAIL);
  assert.equal(touch, null);
  await tracker.consent(true);
  browser.leave();
  assert.equal(browser.storage.size + browser.jar.size + browser.requests.length + browser.beacons.length, 0);
  assert.deepEqual(tracker.touches(), { first: null, latest: null });

  const ignoring = new Browser({ gpc: true });
  assert.ok((await load(ignoring, LANDING, WEBMAIL, { gpc: "ignore" })).touch);
  assert.equal(ignoring.requests.length, 1);
});

test("consent required: touches wait in memory, consent(true) stores and sends them", async () => {
  const browser = new Browser();
  const { tracker, touch } = await load(browser, LANDING, WEBMAIL, { consent: "required" });
  assert.ok(touch);
  browser.leave();
  assert.equal(browser.storage.size + browser.jar.size + browser.requests.length + browser.beacons.length, 0);
  await tracker.consent(true);
  assert.deepEqual(browser.requests.map((r) => r.body.touches[0]), [touch]);
  assert.deepEqual(browser.cookie().t, [touch]);
  browser.leave();
  assert.deepEqual(browser.stored().first, touch);
});

test("consent required: consent(false) drops the held touches and captures no more", async () => {
  const browser = new Browser();
  const { tracker } = await load(browser, LANDING, WEBMAIL, { consent: "required" });
  await tracker.consent(false);
  browser.url = "https://www.example.com/?utm_source=other";
  assert.equal(tracker.capture(), null);
  await tracker.flush();
  browser.leave();
  assert.equal(browser.storage.size + browser.requests.length + browser.beacons.length, 0);
  assert.deepEqual([...browser.jar], [["utm_tracker_consent", "-1"]], "only the refusal is kept");
});

test("consent remembered: a later page load needs no consent() call until it is revoked", async () => {
  const browser = new Browser();
  const first = await load(browser, LANDING, WEBMAIL, { consent: "required" });
  await first.tracker.consent(true);
  assert.equal(browser.jar.get("utm_tracker_consent"), "1");
  assert.ok(browser.cookieWrites.includes("utm_tracker_consent=1;path=/;samesite=lax;max-age=31536000;secure"));
  const second = await load(browser, "https://www.example.com/?utm_source=twitter", "", { consent: "required" });
  assert.ok(second.touch);
  assert.equal(browser.requests.length, 2, "sent without a consent() call");
  // Revoked: what this browser stored goes, and the next page loads capture nothing.
  await second.tracker.consent(false);
  assert.equal(browser.jar.get("utm_tracker_consent"), "-1");
  assert.equal(browser.stored(), undefined);
  assert.equal(browser.cookie(), undefined, "the cookie expired");
  const third = await load(browser, "https://www.example.com/?utm_source=again", WEBMAIL, { consent: "required" });
  assert.equal(third.touch, null);
  assert.equal(browser.requests.length, 2);
  // A refusal holds even on pages that do not ask for consent.
  assert.equal((await load(browser, "https://www.example.com/?utm_source=x")).touch, null);
  // Granted again.
  await third.tracker.consent(true);
  assert.ok((await load(browser, "https://www.example.com/?utm_source=back", "", { consent: "required" })).touch);
});

test("consent remembered: GPC still wins over a stored consent(true), and nothing is stored under GPC", async () => {
  const browser = new Browser();
  browser.jar.set("utm_tracker_consent", "1");
  browser.gpc = true;
  const { tracker, touch } = await load(browser, LANDING, WEBMAIL);
  assert.equal(touch, null);
  await tracker.consent(true);
  await tracker.consent(false);
  browser.leave();
  assert.deepEqual([...browser.jar], [["utm_tracker_consent", "1"]]);
  assert.equal(browser.storage.size + browser.requests.length, 0);
});

test("data-site-hosts, the cookie domain and the link domains: referrers from them are never a touch", async () => {
  const options = { siteHosts: "shop.example.net, pay.example.org", cookieDomain: ".example.com", linkDomains: "brandapp.io" };
  for (const referrer of [
    "https://shop.example.net/cart",
    "https://pay.example.org/",
    "https://blog.example.com/post",
    "https://example.com/",
    "https://app.brandapp.io/",
  ]) {
    const browser = new Browser();
    assert.equal((await load(browser, "https://www.example.com/", referrer, options)).touch, null, referrer);
    assert.equal(browser.requests.length, 0);
  }
  const browser = new Browser();
  const { touch } = await load(browser, "https://www.example.com/?utm_source=x", "https://blog.example.com/", options);
  assert.equal(touch.referrer, undefined, "a campaign from a sibling keeps no referrer");
  assert.ok((await load(new Browser(), "https://www.example.com/", "https://example.net/", options)).touch);
  assert.ok((await load(new Browser(), "https://www.example.com/", "https://notexample.com/", options)).touch);
});

test("misconfigured (403, 404, 405, 415): kept, and one console warning with what to fix", async (t) => {
  const warnings = [];
  const browser = new Browser({ collector: () => 403 });
  browser.errorBody = { error: "Origin https://www.example.com may not send beacons; add it to UTM_TRACKER_ALLOWED_ORIGINS." };
  browser.install();
  globalThis.console = { ...console, warn: (...args) => warnings.push(args.join(" ")) };
  const { tracker, touch } = await load(browser, LANDING);
  await tracker.flush();
  await tracker.flush();
  await settle();
  assert.equal(browser.requests.length, 3);
  browser.leave();
  assert.deepEqual(browser.stored().queue.map((t) => t.id), [touch.id]);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /answered 403, touches kept: .*add it to UTM_TRACKER_ALLOWED_ORIGINS/);

  const lost = new Browser({ collector: () => 404 });
  await load(lost, LANDING, "", { endpoint: "https://www.example.com/wrong/beacon" });
  await settle();
  assert.match(warnings[1], /wrong\/beacon answered 404, touches kept: check data-endpoint/);
  // Fixed: delivered.
  lost.collector = () => 204;
  await load(lost, "https://www.example.com/");
  assert.deepEqual(lost.stored().queue, []);
});

test("data-debug and ?utm_debug=1 log each decision", async () => {
  const lines = [];
  const record = (browser) => {
    browser.install();
    globalThis.console = { ...console, log: (...args) => lines.push(args.map((a) => (typeof a == "object" ? "{touch}" : a)).join(" ")) };
  };
  const browser = new Browser();
  record(browser);
  await load(browser, LANDING, WEBMAIL, { debug: "" });
  await load(browser, LANDING, WEBMAIL, { debug: "" });
  // A reload is said when it is what stopped a touch (new parameters on a reloaded page).
  browser.navigation = "reload";
  await load(browser, "https://www.example.com/?utm_source=reloaded", "", { debug: "" });
  browser.navigation = "navigate";
  await load(browser, "https://www.example.com/?utm_debug=1");
  await load(browser, "https://www.example.com/?utm_debug=1", "https://www.example.com/a");
  browser.collector = () => 503;
  await load(browser, "https://www.example.com/?utm_debug=1&gclid=G");
  const gpc = new Browser({ gpc: true });
  record(gpc);
  await load(gpc, LANDING, "", { debug: "" });
  const held = new Browser();
  record(held);
  const { tracker } = await load(held, LANDING, "", { debug: "", consent: "required" });
  await tracker.consent(false);
  tracker.capture();
  const text = lines.map((line) => line.replace(/\S{22}/g, "ID")).join("\n");
  for (const expected of [
    "utm: captured {touch}",
    "utm: sent ID",
    "utm: acknowledged ID 204",
    "utm: ignored: same as latest",
    "utm: ignored: reload",
    "utm: ignored: direct",
    "utm: ignored: same site",
    "utm: kept ID 503",
    "utm: ignored: GPC",
    "utm: held for consent {touch}",
    "utm: ignored: consent",
  ]) {
    assert.ok(text.includes(expected), `${expected} in\n${text}`);
  }
  const quiet = new Browser();
  lines.length = 0;
  record(quiet);
  await load(quiet, LANDING);
  assert.deepEqual(lines, [], "silent without data-debug");
});

test("the first beacon leaves from a task of its own, not from the capture call", async () => {
  const browser = new Browser({ url: LANDING }).install();
  const tracker = createTracker();
  assert.ok(tracker.capture());
  await Promise.resolve();
  assert.equal(browser.requests.length, 0);
  await settle();
  assert.equal(browser.requests.length, 1);
});

test("a refusal made in the first task after the capture (a tag's onload) stops the first beacon", async () => {
  const browser = new Browser({ url: LANDING, referrer: WEBMAIL });
  // The collector's answer would write the cookie back.
  browser.collector = () => (browser.setCookie({ ...(browser.cookie() || { t: [] }), v: "signed" }), 204);
  browser.install();
  const tracker = createTracker();
  setTimeout(() => tracker.consent(false));
  await Promise.resolve().then(tracker.capture);
  await settle();
  await settle();
  assert.equal(browser.requests.length, 0);
  assert.equal(browser.cookie(), undefined);
  assert.equal(browser.stored(), undefined);
});

test("SPA: capture() reads the new URL; the referrer and reload belong to the first capture only", async () => {
  const browser = new Browser();
  await load(browser, "https://www.example.com/?utm_source=mail");
  browser.navigation = "reload";
  // A reload of a page whose parameters are not the latest touch's: no touch.
  const { tracker, touch: reloaded } = await load(browser, "https://www.example.com/?utm_source=tab", WEBMAIL);
  assert.equal(reloaded, null);
  browser.url = "https://www.example.com/app?utm_source=ads&utm_medium=cpc";
  const touch = tracker.capture();
  assert.deepEqual(touch.params, { utm_source: "ads", utm_medium: "cpc" });
  assert.equal(touch.referrer, undefined);
  await tracker.flush();
  assert.equal(browser.requests.length, 2);
  browser.url = "https://www.example.com/app/settings";
  assert.equal(tracker.capture(), null);
});

test("SPA: spa \"auto\" captures on pushState, replaceState and popstate", async () => {
  const browser = new Browser();
  const { tracker } = await load(browser, "https://www.example.com/", "", { spa: "auto" });
  history.pushState({}, "", "/a?utm_source=one");
  history.replaceState({}, "", "/a?utm_source=two");
  browser.url = "https://www.example.com/b?utm_source=three";
  browser.dispatch("popstate");
  await tracker.flush();
  await settle();
  assert.deepEqual(browser.requests.map((r) => r.body.touches[0].params.utm_source), ["one", "two", "three"]);
});

test("never throws: localStorage throwing still captures and sends (state kept in memory)", async () => {
  const browser = new Browser({ url: LANDING });
  browser.install();
  const broken = () => {
    throw new DOMException("The operation is insecure.", "SecurityError");
  };
  Object.defineProperty(globalThis, "localStorage", { get: broken, configurable: true });
  const tracker = createTracker();
  const touch = tracker.capture();
  await tracker.flush();
  assert.ok(touch);
  assert.equal(browser.requests.length, 1);
  assert.deepEqual(plain(tracker.touches()), plain({ first: touch, latest: touch }));
});

test("never throws: cookies throwing, fetch missing, sendBeacon missing, no performance", async () => {
  const browser = new Browser({ collector: () => 503 });
  browser.install();
  Object.defineProperty(globalThis.document, "cookie", {
    get() {
      throw new DOMException("sandboxed", "SecurityError");
    },
    set() {
      throw new DOMException("sandboxed", "SecurityError");
    },
  });
  delete globalThis.fetch;
  delete globalThis.performance;
  globalThis.navigator.sendBeacon = undefined;
  const tracker = createTracker();
  const touch = tracker.capture();
  assert.equal(touch, null, "no performance: capture gives up quietly");
  Object.defineProperty(globalThis, "performance", { value: { navigation: { type: 0 } }, configurable: true });
  browser.url = LANDING;
  assert.ok(tracker.capture());
  await tracker.flush();
  browser.leave();
  assert.equal(browser.stored().queue.length, 1, "kept for a later page load");
  await tracker.consent(true);
  await settle(); // its timers run within this test
});

test("never throws: garbage in localStorage and the cookie is replaced", async () => {
  const browser = new Browser();
  browser.storage.set("utm_tracker", "{not json");
  browser.jar.set("utm_tracker", "garbage!");
  const { touch } = await load(browser, LANDING);
  assert.ok(touch);
  browser.leave();
  assert.equal(browser.cookie().v, browser.stored().v);
});

test("never throws without a browser at all (server-side rendering)", async () => {
  Browser.reset();
  const tracker = createTracker();
  assert.equal(tracker.capture(), null);
  await tracker.flush();
  assert.deepEqual(tracker.touches(), { first: null, latest: null });
  await tracker.consent(true);
});

test("secrets in the landing URL (an OAuth code, state, a token) and the referrer's query never leave the page", async () => {
  const SECRET = "?code=4%2F0Ab_SeCrEt&state=xyzzy&utm_source=News&token=t0k3n&gclid=G1#access_token=frag";
  // Not acknowledged: the touch stays queued, so the pagehide beacon carries it too.
  const browser = new Browser({ collector: () => 503 });
  const { touch } = await load(browser, "https://www.example.com/callback" + SECRET, "https://accounts.example.org/o/oauth2/auth?client_id=1&code=leak#frag", {
    linkDomains: "brandapp.io",
  });
  assert.equal(touch.url, "https://www.example.com/callback?utm_source=News&gclid=G1", "only the tracked parameters, as written");
  assert.equal(touch.referrer, "https://accounts.example.org/o/oauth2/auth", "origin and path");
  browser.leave();
  const link = { href: "https://brandapp.io/signup" };
  link.closest = () => link;
  browser.dispatch("mousedown", { target: link });
  const token = Buffer.from(new URL(link.href).searchParams.get("_utm"), "base64url").toString("utf8");
  const places = {
    localStorage: JSON.stringify([...browser.storage]),
    cookie: JSON.stringify([...browser.jar]) + browser.cookieWrites.join() + JSON.stringify(browser.cookie()),
    beacon: browser.requests.map((r) => r.init.body).join() + JSON.stringify(browser.beacons),
    token,
  };
  assert.ok(browser.requests.length && browser.beacons.length && token.includes(touch.id));
  for (const [place, text] of Object.entries(places)) {
    for (const secret of ["code", "4%2F0Ab_SeCrEt", "SeCrEt", "xyzzy", "t0k3n", "access_token", "frag", "client_id", "leak"]) {
      assert.ok(!text.includes(secret), `${secret} in ${place}: ${text}`);
    }
  }
});

test("the landing URL keeps the custom tags it tracks, and tracked names match as the collector's strip_query does", async () => {
  const browser = new Browser();
  const { touch } = await load(browser, "https://www.example.com/p?REF=Bob&session=s3cr3t&UTM_Medium=cpc&utm_term=&x=1", "", { customTags: "ref" });
  assert.equal(touch.url, "https://www.example.com/p?REF=Bob&UTM_Medium=cpc&utm_term=");
  const plain = await load(new Browser(), "https://www.example.com/?ref=Bob&utm_source=a");
  assert.equal(plain.touch.url, "https://www.example.com/?utm_source=a", "a custom tag only when named");
});
