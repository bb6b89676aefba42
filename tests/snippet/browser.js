// A fake browser on globalThis for the snippet's unit tests: location, document (referrer, a
// cookie jar, scripts added to the head), localStorage, navigator (GPC, sendBeacon), fetch,
// performance, history, events. Each test installs a fresh one; `Browser.reset()` removes it.
import { readFileSync } from "node:fs";

const NAMES = ["console", "location", "document", "localStorage", "navigator", "fetch", "performance", "history", "addEventListener", "window", "self"];
const saved = new Map(NAMES.map((name) => [name, Object.getOwnPropertyDescriptor(globalThis, name)]));

export class Browser {
  /**
   * @param {object} [o]
   * @param {string} [o.url] the page's URL
   * @param {string} [o.referrer] document.referrer
   * @param {string} [o.navigation] the navigation type ("navigate", "reload", "back_forward")
   * @param {boolean} [o.gpc] navigator.globalPrivacyControl
   * @param {(body: object, request: object) => number | Error} [o.collector] the status to answer
   */
  constructor({ url = "https://www.example.com/", referrer = "", navigation = "navigate", gpc, collector } = {}) {
    this.url = url;
    this.referrer = referrer;
    this.navigation = navigation;
    /** How often the page asked performance.navigation. */
    this.navigationReads = 0;
    /** How often the page used localStorage (its first use in a page costs CPU). */
    this.storageUses = 0;
    this.gpc = gpc;
    /** @type {Map<string, string>} */
    this.jar = new Map();
    /** @type {string[]} every document.cookie assignment */
    this.cookieWrites = [];
    /** @type {Map<string, string>} */
    this.storage = new Map();
    /** @type {{url: string, init: RequestInit, body: any}[]} */
    this.requests = [];
    /** @type {{url: string, body: any}[]} */
    this.beacons = [];
    this.collector = collector || (() => 204);
    /** @type {Record<string, Function[]>} */
    this.listeners = {};
    this.pushed = [];
    /** @type {string[]} the src of every script element the page added */
    this.scripts = [];
  }

  /** Put this browser on globalThis (call again after changing `url` or `referrer` for a new page load). */
  install() {
    const browser = this;
    const define = (name, value) => Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
    define("window", globalThis);
    define("self", globalThis);
    Object.defineProperty(globalThis, "location", {
      configurable: true,
      get: () => new URL(browser.url),
    });
    define("document", {
      createElement: (tagName) => ({ tagName }),
      // A script element added to the head runs, after the current task, from
      // collector/flask_utm_tracker/static/ (its file name), as document.currentScript.
      head: {
        append(element) {
          browser.scripts.push(element.src);
          setTimeout(() => {
            const file = new URL(`../../collector/flask_utm_tracker/static/${element.src.split("/").pop()}`, import.meta.url);
            const current = globalThis.document.currentScript;
            globalThis.document.currentScript = element;
            try {
              new Function(readFileSync(file, "utf8"))();
            } finally {
              globalThis.document.currentScript = current;
            }
          });
        },
      },
      get referrer() {
        return browser.referrer;
      },
      get cookie() {
        return [...browser.jar].map(([name, value]) => `${name}=${value}`).join("; ");
      },
      set cookie(text) {
        browser.cookieWrites.push(text);
        const [pair, ...attributes] = text.split(/; */);
        const at = pair.indexOf("=");
        const maxAge = attributes.find((a) => /^max-age=/i.test(a));
        if (maxAge && Number(maxAge.split("=")[1]) <= 0) browser.jar.delete(pair.slice(0, at));
        else browser.jar.set(pair.slice(0, at), pair.slice(at + 1));
      },
    });
    const storage = {
      getItem: (key) => (browser.storage.has(key) ? browser.storage.get(key) : null),
      setItem: (key, value) => browser.storage.set(key, String(value)),
      removeItem: (key) => browser.storage.delete(key),
    };
    Object.defineProperty(globalThis, "localStorage", {
      configurable: true,
      get: () => (browser.storageUses++, storage),
    });
    define("navigator", {
      globalPrivacyControl: browser.gpc,
      sendBeacon: (url, body) => {
        browser.beacons.push({ url: String(url), body: JSON.parse(body) });
        return true;
      },
    });
    define("fetch", async (url, init) => {
      const body = JSON.parse(init.body);
      browser.requests.push({ url: String(url), init, body });
      const answer = browser.collector(body, init);
      if (answer instanceof Error) throw answer;
      return {
        status: answer,
        ok: answer >= 200 && answer < 300,
        // The collector's error body, {"error": "..."}; another server's is not JSON.
        json: async () => (browser.errorBody ? browser.errorBody : JSON.parse("<html>")),
      };
    });
    define("performance", {
      // Navigation Timing 1's type: 0 navigate, 1 reload, 2 back_forward.
      get navigation() {
        browser.navigationReads++;
        return { type: ["navigate", "reload", "back_forward"].indexOf(browser.navigation) };
      },
    });
    define("history", {
      pushState: (state, title, url) => {
        browser.pushed.push(url);
        browser.url = new URL(url, browser.url).href;
      },
      replaceState: (state, title, url) => {
        browser.url = new URL(url, browser.url).href;
      },
    });
    define("addEventListener", (type, listener) => {
      (browser.listeners[type] ||= []).push(listener);
    });
    return this;
  }

  /** The page is left: the browser fires visibilitychange (hidden), then pagehide. */
  leave() {
    this.dispatch("visibilitychange");
    this.dispatch("pagehide");
  }

  /** Fire a window event (pagehide, popstate; mousedown, submit, ... with a `target`). */
  dispatch(type, event = {}) {
    for (const listener of this.listeners[type] || []) listener({ type, ...event });
  }

  /** The decoded localStorage state under `key`. */
  stored(key = "utm_tracker") {
    const text = this.storage.get(key);
    return text === undefined ? undefined : JSON.parse(text);
  }

  /** The decoded cookie `name` (base64url JSON), or undefined. */
  cookie(name = "utm_tracker") {
    const value = this.jar.get(name);
    return value === undefined ? undefined : JSON.parse(Buffer.from(value, "base64url").toString("utf8"));
  }

  /** Set the cookie as the collector would (base64url of UTF-8 JSON, no padding). */
  setCookie(state, name = "utm_tracker") {
    this.jar.set(name, Buffer.from(JSON.stringify(state), "utf8").toString("base64url"));
  }

  /** Remove every fake from globalThis. */
  static reset() {
    for (const [name, descriptor] of saved) {
      if (descriptor) Object.defineProperty(globalThis, name, descriptor);
      else delete globalThis[name];
    }
  }
}

/** Let pending promises (fetch answers) settle. */
export const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
