// The cookie shared with the collector (snippet/src/cookie.js, collector cookie.py).
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { readFileSync } from "node:fs";
import { cookieValue, cookieWriter, decode, encode, MAX_LENGTH, URL_LIMIT } from "../../snippet/src/cookie.js";
import { TOKEN_LIMIT } from "../../snippet/src/link.js";
import { newId } from "../../snippet/src/ids.js";
import { Browser } from "./browser.js";

afterEach(() => Browser.reset());

const reference = (value) => JSON.parse(Buffer.from(value, "base64url").toString("utf8"));
const touch = (n, params = { utm_source: "news" }) => ({
  id: `touch${n}`,
  ts: 1_700_000_000_000 + n,
  url: `https://www.example.com/landing/${n}?utm_source=news`,
  referrer: "https://mail.google.com/",
  params,
});

test("ids are 22 base64url characters from 16 random bytes", () => {
  const ids = new Set(Array.from({ length: 1000 }, newId));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.match(id, /^[A-Za-z0-9_-]{22}$/);
});

const rule = JSON.parse(readFileSync(new URL("../fixtures/cookie-rule.json", import.meta.url), "utf8"));

test("one rule with the collector: the limits of tests/fixtures/cookie-rule.json", () => {
  assert.equal(MAX_LENGTH, rule.max_length);
  assert.equal(URL_LIMIT, rule.url_limit);
  assert.equal(TOKEN_LIMIT, rule.token_max_length);
});

for (const c of rule.cases) {
  test(`one rule with the collector: ${c.name}`, () => {
    const value = encode(structuredClone(c.state), c.limit);
    assert.deepEqual(reference(value), c.expected);
    assert.equal(value.length, c.length);
  });
}

test("no deprecated escape/unescape in the snippet", () => {
  const source = readFileSync(new URL("../../collector/flask_utm_tracker/static/snippet.js", import.meta.url), "utf8");
  assert.doesNotMatch(source, /\b(un)?escape\(/);
});

test("ids are 128 random bits from crypto.getRandomValues, and never made from a guessable source", (t) => {
  assert.match(newId(), /^[A-Za-z0-9_-]{22}$/);
  assert.notEqual(newId(), newId());
  t.mock.method(globalThis.crypto, "getRandomValues", () => {
    throw new Error("no crypto");
  });
  assert.throws(newId, /no crypto/);
});

test("the value is base64url without padding of UTF-8 JSON, read back by any base64url decoder", () => {
  const state = { v: "visitor_1", t: [touch(1, { utm_term: "café ☕ 😀" })], l: { id: "touch1", ts: 1, params: {} } };
  const value = encode(structuredClone(state));
  assert.match(value, /^[A-Za-z0-9_-]+$/);
  assert.deepEqual(reference(value), state);
  assert.deepEqual(decode(value), state);
});

test("a value the collector wrote decodes, with t defaulting to []", () => {
  const value = Buffer.from(JSON.stringify({ v: "abc", l: { id: "x", ts: 5, params: { gclid: "G" } } })).toString("base64url");
  assert.deepEqual(decode(value), { v: "abc", t: [], l: { id: "x", ts: 5, params: { gclid: "G" } } });
});

test("a null t decodes as [], as the collector reads it", () => {
  const value = Buffer.from(JSON.stringify({ v: "abc", t: null })).toString("base64url");
  assert.deepEqual(decode(value), { v: "abc", t: [] });
});

test("cookieValue finds a cookie among others", () => {
  const browser = new Browser().install();
  browser.jar.set("session", "abc");
  browser.setCookie({ v: "me", t: [] });
  browser.jar.set("other_utm_tracker", "x");
  browser.jar.set("utm_tracker_consent", "1");
  assert.deepEqual(decode(cookieValue(document.cookie, "utm_tracker")), { v: "me", t: [] });
  assert.equal(cookieValue(document.cookie, "utm_tracker_consent"), "1");
  assert.equal(cookieValue(document.cookie, "session"), "abc");
  assert.equal(cookieValue(document.cookie, "missing"), undefined);
  assert.equal(cookieValue("", "utm_tracker"), undefined);
  assert.equal(cookieValue(undefined, "utm_tracker"), undefined, "none could be read");
});

test("cookieWriter: path=/, samesite=lax, max-age, domain when given, secure on https only; empty expires; never throws", () => {
  const browser = new Browser({ url: "https://www.example.com/" }).install();
  const value = encode({ v: "me", t: [] });
  cookieWriter(600, ".example.com")("utm_tracker", value);
  assert.equal(browser.cookieWrites[0], `utm_tracker=${value};path=/;samesite=lax;max-age=600;domain=.example.com;secure`);
  browser.url = "http://localhost:5000/";
  const write = cookieWriter(31536000);
  write("utm_tracker", value);
  assert.equal(browser.cookieWrites[1], `utm_tracker=${value};path=/;samesite=lax;max-age=31536000`);
  write("utm_tracker_consent", -1);
  assert.equal(browser.jar.get("utm_tracker_consent"), "-1");
  write("utm_tracker", "");
  assert.equal(browser.cookieWrites[3], "utm_tracker=;path=/;samesite=lax;max-age=0");
  assert.equal(browser.jar.has("utm_tracker"), false);
  Object.defineProperty(globalThis.document, "cookie", {
    set() {
      throw new DOMException("The document is sandboxed", "SecurityError");
    },
  });
  write("utm_tracker", value);
});
