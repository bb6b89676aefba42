// The built scripts: within their size budgets, fresh (rebuilt from snippet/src each is byte
// for byte the committed static/ file), and working as a script tag with the parts it loads; the
// ES module's exports match its type declarations.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { buildScripts, IIFE, SCRIPTS, sizes, STATIC } from "../../snippet/build.mjs";
import * as api from "../../snippet/src/index.js";
import { Browser, settle } from "./browser.js";

/** The budget of DESIGN.md "Size"; the aim is 1,280. */
const GZIP_BUDGET = 2048;
/** Each optional part the snippet loads only when a page needs it. */
const PART_BUDGET = 1024;
/** The full build, loaded only for a tag with data-* options, is the tracker with all of them. */
const FULL_BUDGET = GZIP_BUDGET + 256;
/** The debug build is the full tracker with its logging, loaded only with data-debug. */
const DEBUG_BUDGET = GZIP_BUDGET + 512;
const BUDGETS = { "snippet-full.js": FULL_BUDGET, "snippet-debug.js": DEBUG_BUDGET };

const temp = mkdtempSync(join(tmpdir(), "snippet-"));
after(() => rmSync(temp, { recursive: true, force: true }));

test(`the gzipped IIFE is at most ${GZIP_BUDGET} bytes`, (t) => {
  const { raw, gzip, brotli } = sizes();
  t.diagnostic(`static/snippet.js: ${raw} B raw, ${gzip} B gzip, ${brotli} B brotli (aim: 1,280 B gzip)`);
  assert.ok(gzip <= GZIP_BUDGET, `${gzip} B gzip is over the ${GZIP_BUDGET} B budget`);
});

for (const file of Object.keys(SCRIPTS).filter((file) => file != "snippet.js")) {
  const budget = BUDGETS[file] || PART_BUDGET;
  test(`static/${file} is at most ${budget} bytes gzipped`, (t) => {
    const { raw, gzip, brotli } = sizes(join(STATIC, file));
    t.diagnostic(`static/${file}: ${raw} B raw, ${gzip} B gzip, ${brotli} B brotli`);
    assert.ok(gzip <= budget, `${gzip} B gzip is over the ${budget} B budget`);
  });
}

test("every committed static/snippet*.js is fresh: `npm run build` would not change it", async () => {
  await buildScripts(temp);
  for (const file of Object.keys(SCRIPTS)) {
    assert.ok(
      readFileSync(join(temp, file), "utf8") === readFileSync(join(STATIC, file), "utf8"),
      `collector/flask_utm_tracker/static/${file} is stale: run \`npm run build\` and commit it.`,
    );
  }
});

/** Let the scripts the page adds run, and what they start settle. */
const scriptsRun = async () => {
  for (let i = 0; i < 4; i++) await settle();
};

test("the IIFE runs from a script tag: window.utmTracker, endpoint beside the script", async () => {
  const browser = new Browser({ url: "https://www.example.com/?utm_source=a&ref=Bob", referrer: "https://mail.yahoo.com/" });
  browser.install();
  globalThis.document.currentScript = { src: "https://app.example.com/utm/snippet.js?v=1", dataset: {} };
  try {
    new Function(readFileSync(IIFE, "utf8"))();
    const tracker = globalThis.utmTracker;
    assert.deepEqual(Object.keys(tracker).sort(), ["capture", "consent", "flush", "touches"]);
    await scriptsRun();
    assert.deepEqual(browser.scripts, [], "a plain tag loads nothing more");
    assert.equal(browser.requests[0].url, "https://app.example.com/utm/beacon");
    assert.deepEqual(browser.requests[0].body.touches[0].params, { utm_source: "a" });
    assert.match(browser.cookieWrites[0], /;path=\/;samesite=lax;max-age=31536000;secure$/);
    assert.equal(browser.storageUses, 0, "a new visitor's page leaves localStorage alone");
    browser.leave();
    assert.equal(browser.stored().v, browser.cookie().v, "stored as the page goes");
    // A second copy of the tag keeps the first tracker.
    new Function(readFileSync(IIFE, "utf8"))();
    assert.equal(globalThis.utmTracker, tracker);
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the IIFE hands a tag with data-* options over to snippet-full.js: custom tags, cookie domain, name, max-age, endpoint", async () => {
  const browser = new Browser({ url: "https://www.example.com/?utm_source=a&ref=Bob", referrer: "https://app.example.com/" });
  browser.install();
  try {
    runTag({ customTags: "ref", cookieDomain: ".example.com", cookieName: "ours", maxAge: "60", endpoint: "https://c.example.com/b" });
    assert.equal(globalThis.utmTracker, undefined, "the full build makes the tracker");
    await scriptsRun();
    assert.deepEqual(browser.scripts, ["https://app.example.com/utm/snippet-full.js"]);
    assert.deepEqual(Object.keys(globalThis.utmTracker).sort(), ["capture", "consent", "flush", "touches"]);
    assert.equal(browser.requests[0].url, "https://c.example.com/b");
    const touch = browser.requests[0].body.touches[0];
    assert.deepEqual(touch.params, { utm_source: "a", ref: "Bob" });
    assert.equal(touch.referrer, undefined, "a referrer within the cookie domain is this site");
    assert.match(browser.cookieWrites[0], /^ours=\S+;path=\/;samesite=lax;max-age=60;domain=\.example\.com;secure$/);
    browser.leave();
    assert.equal(browser.stored("ours").v, browser.cookie("ours").v);
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the IIFE with data-consent=\"required\" hands over to snippet-full.js: held until consent(true)", async () => {
  const browser = new Browser({ url: "https://www.example.com/?utm_source=a", referrer: "https://mail.yahoo.com/" });
  browser.install();
  try {
    runTag({ consent: "required" });
    await scriptsRun();
    assert.deepEqual(browser.scripts, ["https://app.example.com/utm/snippet-full.js"]);
    assert.equal(browser.requests.length, 0);
    assert.equal(browser.storage.size, 0);
    await globalThis.utmTracker.consent(true);
    assert.deepEqual(browser.requests[0].body.touches[0].params, { utm_source: "a" });
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the IIFE without options: a refusal remembered by an earlier page holds, consent(false) works there too", async () => {
  const browser = new Browser({ url: "https://www.example.com/?utm_source=a" });
  browser.install();
  try {
    runTag({});
    await scriptsRun();
    assert.equal(browser.requests.length, 1);
    await globalThis.utmTracker.consent(false);
    browser.leave();
    browser.listeners = {};
    assert.deepEqual([...browser.jar], [["utm_tracker_consent", "-1"]]);
    assert.equal(browser.storage.size, 0);
    delete globalThis.utmTracker;
    browser.url = "https://www.example.com/?utm_source=b";
    runTag({});
    await scriptsRun();
    assert.equal(globalThis.utmTracker.capture(), null);
    assert.equal(browser.requests.length, 1);
    browser.leave();
    assert.deepEqual([...browser.jar], [["utm_tracker_consent", "-1"]]);
    assert.equal(browser.storage.size, 0);
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the IIFE without options honours GPC: nothing stored or sent", async () => {
  const browser = new Browser({ url: "https://www.example.com/?utm_source=a", gpc: true });
  browser.install();
  try {
    runTag({});
    await scriptsRun();
    await globalThis.utmTracker.consent(true);
    assert.equal(globalThis.utmTracker.capture(), null);
    assert.deepEqual([browser.requests.length, browser.storage.size, browser.cookieWrites.length], [0, 0, 0]);
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the IIFE captures before any other task: a page left at once still sends its touch (sendBeacon), one touch in all", async () => {
  const browser = new Browser({ url: "https://www.example.com/?utm_source=a&gclid=G", referrer: "https://mail.yahoo.com/" });
  browser.install();
  try {
    runTag({});
    // The first task after the script's own (queued before anything the script queues): the
    // visitor leaves the page.
    await new Promise((resolve) => setTimeout(() => resolve(browser.leave())));
    assert.equal(browser.beacons.length, 1);
    const [touch] = browser.beacons[0].body.touches;
    assert.deepEqual(touch.params, { utm_source: "a", gclid: "G" });
    assert.equal(touch.referrer, "https://mail.yahoo.com/");
    assert.equal(browser.cookie().t[0].id, touch.id);
    assert.equal(browser.stored().queue[0].id, touch.id);
    // Should the page stay (or come back from the back/forward cache), the same touch goes by
    // fetch too, and nothing else does.
    await scriptsRun();
    assert.deepEqual(browser.requests.map((r) => r.body.touches[0].id), [touch.id]);
    assert.equal(globalThis.utmTracker.touches().first.id, touch.id);
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
    await scriptsRun();
    assert.equal(browser.requests[0].url, "/utm/beacon");
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

/** Run the built snippet as a script tag at `src` with the data-* attributes `dataset`. */
function runTag(dataset, src = "https://app.example.com/utm/snippet.js") {
  globalThis.document.currentScript = { src, dataset };
  new Function(readFileSync(IIFE, "utf8"))();
  globalThis.document.currentScript = null;
}

test("the IIFE loads a part only when the page needs it, from beside itself", async () => {
  const browser = new Browser({ url: "https://www.example.com/?utm_source=a", referrer: "https://mail.yahoo.com/" });
  browser.install();
  try {
    runTag({});
    await scriptsRun();
    assert.deepEqual(browser.scripts, [], "a plain tag loads nothing more");
    assert.equal(browser.requests.length, 1);
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the IIFE with data-link-domains loads snippet-full.js, then snippet-link.js, which decorates a followed link", async () => {
  const browser = new Browser({ url: "https://www.brand.com/?utm_source=a", referrer: "https://mail.yahoo.com/" });
  browser.install();
  try {
    runTag({ linkDomains: "brand.com,brandapp.io" });
    await scriptsRun();
    assert.deepEqual(browser.scripts, ["https://app.example.com/utm/snippet-full.js", "https://app.example.com/utm/snippet-link.js"]);
    const link = { href: "https://brandapp.io/signup" };
    link.closest = () => link;
    browser.dispatch("mousedown", { target: link });
    const token = new URL(link.href).searchParams.get("_utm");
    const decoded = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    assert.equal(decoded.t[0].id, globalThis.utmTracker.touches().first.id);
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the IIFE with data-spa=\"auto\" loads snippet-full.js, then snippet-spa.js, which captures route changes", async () => {
  const browser = new Browser({ url: "https://www.example.com/" });
  browser.install();
  try {
    runTag({ spa: "auto" });
    // Changed while the part was loading: caught by the capture it makes on arrival.
    history.pushState({}, "", "/a?utm_source=early");
    await scriptsRun();
    assert.deepEqual(browser.scripts, ["https://app.example.com/utm/snippet-full.js", "https://app.example.com/utm/snippet-spa.js"]);
    history.pushState({}, "", "/b?utm_source=later");
    await globalThis.utmTracker.flush();
    await scriptsRun();
    assert.deepEqual(browser.requests.map((r) => r.body.touches[0].params.utm_source), ["early", "later"]);
  } finally {
    delete globalThis.utmTracker;
    Browser.reset();
  }
});

test("the IIFE loads snippet-answer.js for an answer other than 2xx: 4xx dropped, misconfigured kept and warned once", async (t) => {
  const warnings = [];
  t.mock.method(console, "warn", (...args) => warnings.push(args.join(" ")));
  for (const [status, kept] of [[422, false], [503, true], [403, true]]) {
    const browser = new Browser({ url: "https://www.example.com/?gclid=G", collector: () => status });
    browser.install();
    try {
      runTag({});
      await scriptsRun();
      assert.deepEqual(browser.scripts, ["https://app.example.com/utm/snippet-answer.js"], `answer ${status}`);
      browser.leave();
      assert.equal(browser.stored().queue.length, kept ? 1 : 0, `answer ${status}`);
    } finally {
      delete globalThis.utmTracker;
      Browser.reset();
    }
  }
  await settle();
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /flask-utm-tracker: https:\/\/app\.example\.com\/utm\/beacon answered 403, touches kept: check data-endpoint/);
});

test("the IIFE with data-debug or ?utm_debug=1 hands over to snippet-debug.js, which logs each decision", async (t) => {
  for (const [url, dataset] of [
    ["https://www.example.com/?utm_source=a", { debug: "" }],
    ["https://www.example.com/?utm_source=a&utm_debug=1", {}],
  ]) {
    const lines = [];
    t.mock.method(console, "log", (...args) => lines.push(args.map((a) => (typeof a == "object" ? "{touch}" : a)).join(" ")));
    const browser = new Browser({ url });
    browser.install();
    try {
      runTag({ ...dataset, customTags: "ref" });
      assert.equal(globalThis.utmTracker, undefined, "the debug build makes the tracker");
      await scriptsRun();
      assert.deepEqual(browser.scripts, ["https://app.example.com/utm/snippet-debug.js"]);
      assert.deepEqual(Object.keys(globalThis.utmTracker).sort(), ["capture", "consent", "flush", "touches"]);
      assert.equal(browser.requests[0].url, "https://app.example.com/utm/beacon", "beside the tag that asked");
      const text = lines.join("\n").replace(/\S{22}/g, "ID");
      assert.ok(text.includes("utm: captured {touch}") && text.includes("utm: acknowledged ID 204"), text);
    } finally {
      delete globalThis.utmTracker;
      Browser.reset();
      t.mock.restoreAll();
    }
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
