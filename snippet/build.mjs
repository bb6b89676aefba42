// Builds the snippet with esbuild:
//   collector/flask_utm_tracker/static/snippet.js   the minified IIFE the collector serves (committed)
//   snippet/dist/index.js, index.d.ts               the ES module of the npm package (built at pack time)
// `node snippet/build.mjs --size` prints the IIFE's raw / gzip / brotli sizes;
// `node snippet/build.mjs --iife FILE` writes only the IIFE, to FILE (the freshness test uses it).
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import * as esbuild from "esbuild";
import { minify } from "terser";

const here = dirname(fileURLToPath(import.meta.url));
export const IIFE = join(here, "../collector/flask_utm_tracker/static/snippet.js");

/** esbuild's JSON loader, minus the "_comment" keys of params.json (they would ship in the bundle). */
const shareParams = {
  name: "share-params",
  setup(build) {
    build.onLoad({ filter: /params\.json$/ }, ({ path }) => {
      const data = JSON.parse(readFileSync(path, "utf8"));
      for (const key of Object.keys(data)) if (key.startsWith("_")) delete data[key];
      return { contents: JSON.stringify(data), loader: "json" };
    });
  },
};

const common = { bundle: true, plugins: [shareParams], legalComments: "none", logLevel: "warning" };

/** Build the IIFE to `outfile`: esbuild bundles and minifies, terser squeezes out ~50 B more gzip. */
export async function buildIife(outfile = IIFE) {
  const { outputFiles } = await esbuild.build({
    ...common,
    entryPoints: [join(here, "src/snippet.js")],
    write: false,
    format: "iife",
    minify: true,
    // Browsers since 2020 (optional chaining, URL, fetch keepalive, Promise.allSettled).
    target: ["es2020"],
  });
  const { code } = await minify(outputFiles[0].text, {
    ecma: 2020,
    toplevel: true,
    compress: { passes: 3, unsafe: true, unsafe_arrows: true, pure_getters: true },
    format: { comments: false },
  });
  mkdirSync(dirname(outfile), { recursive: true });
  writeFileSync(outfile, code + "\n");
}

/** Build the npm package's ES module and type declarations into snippet/dist. */
export async function buildModule() {
  await esbuild.build({
    ...common,
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
  if (args[0] === "--iife") {
    await buildIife(args[1]);
  } else {
    if (args[0] !== "--size") await Promise.all([buildIife(), buildModule()]);
    const { raw, gzip, brotli } = sizes();
    console.log(`static/snippet.js: ${raw} B raw, ${gzip} B gzip, ${brotli} B brotli`);
  }
}
