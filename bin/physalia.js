#!/usr/bin/env -S node --max-semi-space-size=64 --expose-gc --no-minor-gc-task
// Runs the compiled command (built by `npm ci` / `npm run build`). The flags on the first line are
// the server's (`serverNodeFlags`, src/server/runtime.ts; a test keeps the two equal): every
// command started through this file, `physalia server` included, runs with them. Whoever starts
// this file with `node` directly passes them itself.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const compiled = join(root, "dist", "cli", "main.js");
if (!existsSync(compiled)) {
  console.error("physalia is not built: run `npm ci` (or `npm run build`) in the project first");
  process.exit(2);
}
await import(compiled);
