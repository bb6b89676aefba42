// Cross-domain links (snippet/src/link.js and the tracker's link handler): the _utm token, its
// examples in tests/fixtures/utm-tokens.json (the collector's tests read them too), and which
// links and forms are decorated, at the moment the visitor follows them.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { afterEach, test } from "node:test";
import { decorate, domainOf, list, token, TOKEN_LIMIT } from "../../snippet/src/link.js";
import { createTracker } from "../../snippet/src/tracker.js";
import { Browser, settle } from "./browser.js";

afterEach(() => Browser.reset());

const examples = JSON.parse(readFileSync(new URL("../fixtures/utm-tokens.json", import.meta.url), "utf8"));
const decode = (value) => JSON.parse(Buffer.from(value, "base64url").toString("utf8"));

for (const example of examples.valid) {
  test(`token example: ${example.name}`, () => {
    const value = token(example.touches, example.at);
    assert.equal(value, example.token);
    assert.match(value, /^[A-Za-z0-9_-]+$/);
    assert.ok(value.length <= TOKEN_LIMIT);
    assert.deepEqual(decode(value), example.decoded);
    assert.equal(example.decoded.at, example.at);
    // Same touch shape as the beacon's.
    for (const touch of example.decoded.t) {
      assert.match(touch.id, /^[A-Za-z0-9_-]{1,64}$/);
      assert.equal(typeof touch.ts, "number");
      assert.ok(touch.url || touch.params);
      for (const key of Object.keys(touch)) assert.ok(["id", "ts", "url", "referrer", "params"].includes(key), key);
    }
  });
}

test("the capped example kept the first touch and the newest pending one", () => {
  const capped = examples.valid.find((e) => e.name.startsWith("capped"));
  const ids = capped.touches.map((t) => t.id);
  assert.deepEqual(capped.decoded.t.map((t) => t.id), [ids[0], ids[ids.length - 1]]);
});

test("the invalid examples are not tokens the snippet makes", () => {
  for (const { token: value } of examples.invalid) {
    let decoded;
    try {
      decoded = decode(value);
    } catch {
      continue;
    }
    const touches = decoded?.t;
    const valid =
      value.length <= TOKEN_LIMIT &&
      typeof decoded?.at == "number" &&
      Array.isArray(touches) &&
      touches.length > 0 &&
      touches.every((t) => /^[A-Za-z0-9_-]{1,64}$/.test(t.id) && (t.url || t.params) && Object.values(t.params || {}).every((v) => typeof v == "string"));
    assert.equal(valid, false, value.slice(0, 40));
  }
});

test("no touch fits: no token", () => {
  assert.equal(token([], 1), undefined);
  assert.equal(token([{ id: "a", ts: 1, params: { ref: "x".repeat(2000) } }], 1), undefined);
});

test("domains: the entry itself and its sub-domains, a leading dot ignored, nothing else", () => {
  const domains = list(" Brand.com, .brandapp.io ");
  assert.deepEqual(domains, ["brand.com", ".brandapp.io"]);
  assert.equal(domainOf("brand.com", domains), "brand.com");
  assert.equal(domainOf("www.brand.com", domains), "brand.com");
  assert.equal(domainOf("app.brandapp.io", domains), ".brandapp.io");
  assert.equal(domainOf("brandapp.io", domains), ".brandapp.io");
  assert.equal(domainOf("notbrand.com", domains), undefined);
  assert.equal(domainOf("brand.com.evil.test", domains), undefined);
});

test("decorate: _utm added or replaced, the other parameters and the fragment left as written", () => {
  assert.equal(decorate("https://brandapp.io/signup", "TOK"), "https://brandapp.io/signup?_utm=TOK");
  assert.equal(decorate("https://brandapp.io/s?a=1,2&b=%7E#top", "TOK"), "https://brandapp.io/s?a=1,2&b=%7E&_utm=TOK#top");
  assert.equal(decorate("https://brandapp.io/s?_utm=OLD&a=1", "NEW"), "https://brandapp.io/s?a=1&_utm=NEW");
  assert.equal(decorate("https://brandapp.io/s?a=1&_utm=OLD", "NEW"), "https://brandapp.io/s?a=1&_utm=NEW");
});

/** A fake element: an anchor (`href`) or a form (`action`, `method`, `elements`). */
const element = (props) => {
  const el = { ...props, closest: () => el };
  if (props.action !== undefined) {
    el.elements = {};
    el.appendChild = (child) => ((el.elements[child.name] = child), child);
  }
  return el;
};

const LANDING = "https://www.brand.com/?utm_source=news&utm_medium=email";

async function landed(options = { linkDomains: "brand.com,brandapp.io" }, url = LANDING, referrer = "https://mail.google.com/") {
  const browser = new Browser({ url, referrer });
  browser.install();
  const tracker = createTracker(options);
  const touch = tracker.capture();
  await settle();
  return { browser, tracker, touch };
}

test("a link to a link domain gets _utm when followed: the first touch and the pending ones", async () => {
  const { browser, touch } = await landed();
  const pending = { id: "later", ts: touch.ts + 1, url: "https://www.brand.com/b?gclid=G", params: { gclid: "G" } };
  browser.setCookie({ ...browser.cookie(), t: [touch, pending] });
  const link = element({ href: "https://app.brandapp.io/signup?plan=pro" });
  assert.equal(link.href, "https://app.brandapp.io/signup?plan=pro", "not rewritten on load");
  browser.dispatch("mousedown", { target: link });
  const url = new URL(link.href);
  assert.equal(url.searchParams.get("plan"), "pro");
  const decoded = decode(url.searchParams.get("_utm"));
  assert.deepEqual(decoded.t.map((t) => t.id), [touch.id, "later"]);
  assert.deepEqual(decoded.t[0], JSON.parse(JSON.stringify(touch)));
  assert.ok(Math.abs(decoded.at - Date.now()) < 5000);
  // Followed again (click after mousedown): replaced, not repeated.
  browser.dispatch("click", { target: link });
  assert.equal(new URL(link.href).searchParams.getAll("_utm").length, 1);
});

test("links elsewhere, to this page's own link domain, or without touches are left alone", async () => {
  const { browser } = await landed();
  for (const href of ["https://other.example/x", "https://shop.brand.com/cart", "mailto:a@brandapp.io"]) {
    const link = element({ href });
    browser.dispatch("mousedown", { target: link });
    assert.equal(link.href, href);
  }
  const direct = await landed(undefined, "https://www.brand.com/", "");
  const link = element({ href: "https://brandapp.io/" });
  direct.browser.dispatch("mousedown", { target: link });
  assert.equal(link.href, "https://brandapp.io/");
});

test("without data-link-domains nothing listens; without consent nothing is carried", async () => {
  const { browser } = await landed({});
  assert.equal(browser.listeners.mousedown, undefined);
  const held = await landed({ linkDomains: "brandapp.io", consent: "required" });
  const link = element({ href: "https://brandapp.io/" });
  held.browser.dispatch("mousedown", { target: link });
  assert.equal(link.href, "https://brandapp.io/");
});

test("forms: POST gets _utm on its action, GET a hidden input (its action's query is replaced on submit)", async () => {
  const { browser, touch } = await landed();
  const post = element({ action: "https://brandapp.io/signup", method: "post" });
  browser.dispatch("submit", { target: post });
  assert.equal(decode(new URL(post.action).searchParams.get("_utm")).t[0].id, touch.id);
  const get = element({ action: "https://brandapp.io/search", method: "get" });
  browser.dispatch("submit", { target: get });
  assert.equal(get.action, "https://brandapp.io/search");
  assert.deepEqual({ ...get.elements._utm, value: undefined }, { tagName: "input", type: "hidden", name: "_utm", value: undefined });
  assert.equal(decode(get.elements._utm.value).t[0].id, touch.id);
  browser.dispatch("submit", { target: get });
  assert.equal(Object.keys(get.elements).length, 1, "one hidden input, refreshed");
});

test("a broken target never throws into the page", async () => {
  const { browser } = await landed();
  browser.dispatch("mousedown", { target: null });
  browser.dispatch("mousedown", { target: { closest: () => null } });
  browser.dispatch("mousedown", { target: element({ href: "not a url" }) });
});
