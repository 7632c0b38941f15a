#!/usr/bin/env node
// Runs the compiled command (built by `npm ci` / `npm run build`).
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
