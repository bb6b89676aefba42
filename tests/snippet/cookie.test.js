// The cookie shared with the collector (snippet/src/cookie.js, collector cookie.py).
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { readFileSync } from "node:fs";
import { decode, encode, MAX_LENGTH, readCookie, URL_LIMIT, writeCookie } from "../../snippet/src/cookie.js";
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

test("readCookie finds its cookie among others and ignores garbage", () => {
  const browser = new Browser().install();
  browser.jar.set("session", "abc");
  browser.setCookie({ v: "me", t: [] });
  browser.jar.set("other_utm_tracker", "x");
  assert.deepEqual(readCookie("utm_tracker"), { v: "me", t: [] });
  assert.equal(readCookie("missing"), undefined);
  browser.jar.set("utm_tracker", "%%%not base64");
  assert.equal(readCookie("utm_tracker"), undefined);
  browser.jar.set("utm_tracker", Buffer.from('{"t":[]}').toString("base64url"));
  assert.equal(readCookie("utm_tracker"), undefined);
});

test("readCookie returns undefined when document.cookie throws (cookies blocked)", () => {
  new Browser().install();
  Object.defineProperty(globalThis.document, "cookie", {
    get() {
      throw new DOMException("The document is sandboxed", "SecurityError");
    },
  });
  assert.equal(readCookie("utm_tracker"), undefined);
});

test("writeCookie: Path=/, SameSite=Lax, Max-Age, Domain when given, Secure on https only", () => {
  const browser = new Browser({ url: "https://www.example.com/" }).install();
  writeCookie("utm_tracker", { v: "me", t: [] }, 600, ".example.com");
  assert.match(browser.cookieWrites[0], /^utm_tracker=[A-Za-z0-9_-]+; Path=\/; SameSite=Lax; Max-Age=600; Domain=\.example\.com; Secure$/);
  browser.url = "http://localhost:5000/";
  writeCookie("utm_tracker", { v: "me", t: [] }, 31536000);
  assert.match(browser.cookieWrites[1], /; Path=\/; SameSite=Lax; Max-Age=31536000$/);
  assert.doesNotMatch(browser.cookieWrites[1], /HttpOnly|Secure|Domain/);
});
