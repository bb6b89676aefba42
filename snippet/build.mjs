// Builds the snippet with esbuild:
//   collector/flask_utm_tracker/static/snippet.js        the minified IIFE the collector serves (committed)
//   collector/flask_utm_tracker/static/snippet-<part>.js its optional parts, loaded by it when asked for
//   snippet/dist/index.js, index.d.ts                    the ES module of the npm package (built at pack time)
// `node snippet/build.mjs --size` prints each script's raw / gzip / brotli sizes;
// `node snippet/build.mjs --scripts DIR` writes only the scripts, into DIR (the freshness test uses it).
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import * as esbuild from "esbuild";
import { minify } from "terser";

const here = dirname(fileURLToPath(import.meta.url));
/** Where the collector serves the scripts from. */
export const STATIC = join(here, "../collector/flask_utm_tracker/static");
/**
 * The built scripts: file in STATIC -> [entry point in src/, flags (flags.js)]. snippet-full.js
 * is the tracker with the options only some tags set, snippet-debug.js that with its logging
 * (snippet.js hands such tags over to them); the others are parts, loaded when needed.
 */
export const SCRIPTS = {
  "snippet.js": ["snippet.js", {}],
  "snippet-full.js": ["snippet.js", { FULL: true }],
  "snippet-debug.js": ["snippet.js", { FULL: true, DEBUG: true }],
  "snippet-link.js": ["snippet-link.js", {}],
  "snippet-spa.js": ["snippet-spa.js", {}],
  "snippet-answer.js": ["snippet-answer.js", {}],
};
export const IIFE = join(STATIC, "snippet.js");

/**
 * esbuild's JSON loader for params.json, minus its "_comment" keys (they would ship in the
 * bundle) and with each list as one comma-separated string (params.js splits it).
 */
const shareParams = {
  name: "share-params",
  setup(build) {
    build.onLoad({ filter: /params\.json$/ }, ({ path }) => {
      const data = JSON.parse(readFileSync(path, "utf8"));
      for (const key of Object.keys(data)) {
        if (key.startsWith("_")) delete data[key];
        else if (Array.isArray(data[key])) data[key] = data[key].join(",");
      }
      return { contents: JSON.stringify(data), loader: "json" };
    });
  },
};

/** src/flags.js with the flags as given (each false unless set). */
const flags = ({ DEBUG = false, FULL = false }) => ({
  name: "flags",
  setup(build) {
    build.onLoad({ filter: /[\\/]flags\.js$/ }, () => ({
      contents: `export const DEBUG = ${DEBUG}, FULL = ${FULL};`,
      loader: "js",
    }));
  },
});

const common = { bundle: true, legalComments: "none", logLevel: "warning" };

/**
 * V8's explicit compile hint (Chrome 136 on): every function of the file is compiled with the
 * script, on the thread that streams it, instead of lazily on the main thread when first called
 * (measured: about 1.5 ms less main-thread CPU per landing page). Nearly all of snippet.js runs
 * at load; the full and debug builds, for tags with options, go without it (their budgets).
 */
const HINT = "//# allFunctionsCalledOnLoad\n";

/** One script: esbuild bundles and minifies an IIFE, terser squeezes out a little more. */
async function buildScript(entry, flagged, hint = entry == "snippet.js" && !flagged.FULL) {
  const { outputFiles } = await esbuild.build({
    ...common,
    plugins: [shareParams, flags(flagged)],
    entryPoints: [join(here, "src", entry)],
    write: false,
    format: "iife",
    minify: true,
    // Browsers since 2020 (optional chaining, URL, fetch keepalive, Promise.allSettled).
    target: ["es2020"],
  });
  const { code } = await minify(outputFiles[0].text, {
    ecma: 2020,
    toplevel: true,
    compress: { passes: 5, unsafe: true, unsafe_arrows: true, unsafe_comps: true, unsafe_methods: true, pure_getters: true },
    format: { comments: false },
  });
  return (hint ? HINT : "") + code + "\n";
}

/** Build every script of SCRIPTS into `dir`. */
export async function buildScripts(dir = STATIC) {
  mkdirSync(dir, { recursive: true });
  await Promise.all(
    Object.entries(SCRIPTS).map(async ([file, [entry, flagged]]) => writeFileSync(join(dir, file), await buildScript(entry, flagged))),
  );
}

/** Build the npm package's ES module and type declarations into snippet/dist. */
export async function buildModule() {
  await esbuild.build({
    ...common,
    plugins: [shareParams],
    entryPoints: [join(here, "src/index.js")],
    outfile: join(here, "dist/index.js"),
    format: "esm",
    target: ["es2020"],
  });
  mkdirSync(join(here, "dist"), { recursive: true });
  copyFileSync(join(here, "src/index.d.ts"), join(here, "dist/index.d.ts"));
}

/** Raw, gzip (level 9) and brotli (quality 11) sizes of `file`, in bytes. */
export function sizes(file = IIFE) {
  const code = readFileSync(file);
  return {
    raw: code.length,
    gzip: gzipSync(code, { level: 9 }).length,
    brotli: brotliCompressSync(code, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  if (args[0] === "--scripts") {
    await buildScripts(args[1]);
  } else {
    if (args[0] !== "--size") await Promise.all([buildScripts(), buildModule()]);
    for (const file of Object.keys(SCRIPTS)) {
      const { raw, gzip, brotli } = sizes(join(STATIC, file));
      console.log(`static/${file}: ${raw} B raw, ${gzip} B gzip, ${brotli} B brotli`);
    }
  }
}
