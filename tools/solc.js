#!/usr/bin/env node
// A native-compatible `solc` front end over the npm (wasm) compiler, so forge works offline.
// forge only uses `--version` and `--standard-json` (JSON on stdin); both are answered here.
// A user with a native solc overrides this path (GPUMESH_SOLC / FOUNDRY_SOLC).
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const args = process.argv.slice(2);
if (args.includes('--version')) {
  const v = solc.version(); // e.g. 0.8.37+commit.abc.Emscripten.clang
  const m = /^([0-9.]+)\+commit\.([0-9a-f]+)/.exec(v);
  process.stdout.write('solc, the solidity compiler commandline interface\n');
  process.stdout.write(`Version: ${m[1]}+commit.${m[2]}.Linux.g++\n`);
  process.exit(0);
}
if (!args.includes('--standard-json')) {
  process.stderr.write('tools/solc.js answers only --version and --standard-json\n');
  process.exit(2);
}
let base = process.cwd();
const bp = args.indexOf('--base-path');
if (bp >= 0 && args[bp + 1]) base = args[bp + 1];
const includes = [];
args.forEach((a, i) => { if (a === '--include-path' && args[i + 1]) includes.push(args[i + 1]); });

function findImports(p) {
  for (const root of [base, ...includes, process.cwd()]) {
    const full = path.isAbsolute(p) ? p : path.join(root, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  }
  return { error: `File not found: ${p}` };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
