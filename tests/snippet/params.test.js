// Parsing and normalising the tracked query parameters (snippet/src/params.js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parseParams as parseQuery } from "../../snippet/src/params.js";

/** The tracked parameters of `url`'s query string, as the tracker reads location.search. */
const parseParams = (url, tags) => parseQuery(new URL(url).search, tags);

const list = JSON.parse(readFileSync(new URL("../../collector/flask_utm_tracker/data/params.json", import.meta.url), "utf8"));

test("every name of the shared params.json is tracked, and nothing else", () => {
  for (const name of [...list.utm, ...list.click_ids]) {
    assert.deepEqual(parseParams(`https://a.test/?${name}=X`), { [name]: name.startsWith("utm_") ? "x" : "X" });
  }
  assert.deepEqual(parseParams("https://a.test/?page=2&q=shoes&utm=1"), {});
});

test("names match case-insensitively and are kept lower-case", () => {
  assert.deepEqual(parseParams("https://a.test/?UTM_Source=News&ScCid=AbC&GCLID=Cj0K"), {
    utm_source: "news",
    sccid: "AbC",
    gclid: "Cj0K",
  });
});

test("utm values are trimmed and lower-cased, click IDs and custom tags kept as sent", () => {
  assert.deepEqual(parseParams("https://a.test/?utm_campaign=%20Spring%20Sale%20&fbclid=%20IwAR_Xy%20&ref=Bob", ["ref"]), {
    utm_campaign: "spring sale",
    fbclid: "IwAR_Xy",
    ref: "Bob",
  });
});

test("empty values are ignored; the first non-empty value of a name wins", () => {
  assert.deepEqual(parseParams("https://a.test/?utm_source=&utm_medium=%20%20&utm_source=a&utm_source=b"), {
    utm_source: "a",
  });
});

test("values are truncated to max_value_length, never rejected", () => {
  const long = "x".repeat(400);
  const params = parseParams(`https://a.test/?gclid=${long}&utm_term=${long.toUpperCase()}`);
  assert.equal(params.gclid.length, list.max_value_length);
  assert.equal(params.utm_term, "x".repeat(list.max_value_length));
});

test("percent-encoding and plus signs decode as in a form (URLSearchParams)", () => {
  assert.deepEqual(parseParams("https://a.test/?utm_term=caf%C3%A9+au+lait&utm_content=a%2Bb"), {
    utm_term: "café au lait",
    utm_content: "a+b",
  });
});

test("custom tags are tracked only when named", () => {
  assert.deepEqual(parseParams("https://a.test/?ref=x&partner=Acme"), {});
  assert.deepEqual(parseParams("https://a.test/?ref=x&Partner=Acme", ["ref", "partner"]), { ref: "x", partner: "Acme" });
});
