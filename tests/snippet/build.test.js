// The built IIFE: within the size budget, fresh (rebuilt from snippet/src it is byte for byte
// the committed static/snippet.js), and working as a script tag; the ES module's exports match
// its type declarations.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { buildIife, IIFE, sizes } from "../../snippet/build.mjs";
import * as api from "../../snippet/src/index.js";
import { Browser, settle } from "./browser.js";

/** The budget of DESIGN.md "Size"; the aim is 1,280. */
const GZIP_BUDGET = 2048;

const temp = mkdtempSync(join(tmpdir(), "snippet-"));
after(() => rmSync(temp, { recursive: true, force: true }));

test(`the gzipped IIFE is at most ${GZIP_BUDGET} bytes`, (t) => {
  const { raw, gzip, brotli } = sizes();
  t.diagnostic(`static/snippet.js: ${raw} B raw, ${gzip} B gzip, ${brotli} B brotli (aim: 1,280 B gzip)`);
  assert.ok(gzip <= GZIP_BUDGET, `${gzip} B gzip is over the ${GZIP_BUDGET} B budget`);
});

test("the committed static/snippet.js is fresh: `npm run build` would not change it", async () => {
  const fresh = join(temp, "snippet.js");
  await buildIife(fresh);
  assert.ok(
    readFileSync(fresh, "utf8") === readFileSync(IIFE, "utf8"),
    "collector/flask_utm_tracker/static/snippet.js is stale: run `npm run build` and commit it.",
  );
});

test("the IIFE runs from a script tag: window.utmTracker, data-* options, endpoint beside the script", async () => {
  const browser = new Browser({ url: "https://www.example.com/?utm_source=a&ref=Bob", referrer: "https://mail.yahoo.com/" });
  browser.install();
  globalThis.document.currentScript = {
    src: "https://app.example.com/utm/snippet.js?v=1",
    dataset: { customTags: "ref", cookieDomain: ".example.com" },
  };
  try {
    new Function(readFileSync(IIFE, "utf8"))();
    const tracker = globalThis.utmTracker;
    assert.deepEqual(Object.keys(tracker).sort(), ["capture", "consent", "flush", "touches"]);
    await settle();
    assert.equal(browser.requests[0].url, "https://app.example.com/utm/beacon");
    assert.deepEqual(browser.requests[0].body.touches[0].params, { utm_source: "a", ref: "Bob" });
    assert.match(browser.cookieWrites[0], /; Domain=\.example\.com; Secure$/);
    // A second copy of the tag keeps the first tracker.
    new Function(readFileSync(IIFE, "utf8"))();
    assert.equal(globalThis.utmTracker, tracker);
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the IIFE without document.currentScript falls back to /utm/beacon and does not throw", async () => {
  const browser = new Browser({ url: "https://www.example.com/?gclid=G" });
  browser.install();
  globalThis.document.currentScript = null;
  try {
    new Function(readFileSync(IIFE, "utf8"))();
    await settle();
    assert.equal(browser.requests[0].url, "/utm/beacon");
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the ES module exports what index.d.ts declares", () => {
  const declared = [...readFileSync(new URL("../../snippet/src/index.d.ts", import.meta.url), "utf8").matchAll(/^export function (\w+)/gm)].map(
    (m) => m[1],
  );
  assert.deepEqual(Object.keys(api).sort(), declared.sort());
});

test("the ES module: init() captures once and returns the same tracker; capture() works without init", async () => {
  const browser = new Browser({ url: "https://www.example.com/?utm_source=spa" });
  browser.install();
  try {
    const tracker = api.init({ endpoint: "https://app.example.com/utm/beacon" });
    assert.equal(api.init({ endpoint: "ignored" }), tracker);
    await api.flush();
    assert.equal(browser.requests.length, 1);
    assert.equal(browser.requests[0].url, "https://app.example.com/utm/beacon");
    browser.url = "https://www.example.com/next?utm_source=route";
    assert.equal(api.capture().params.utm_source, "route");
    assert.equal(api.touches().first.params.utm_source, "spa");
  } finally {
    Browser.reset();
  }
});
