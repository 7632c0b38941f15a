#!/usr/bin/env -S node --max-semi-space-size=64 --min-semi-space-size=16 --expose-gc --no-minor-gc-task
// Runs the compiled command (built by `npm ci` / `npm run build`). The flags on the first line are
// the server's (`serverNodeFlags`, src/server/runtime.ts; a test keeps the two equal): every
// command started through this file, `physalia server` included, runs with them. Whoever starts
// this file with `node` directly passes them itself.
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const compiled = join(root, "dist", "cli", "main.js");
if (!existsSync(compiled)) {
  console.error("physalia is not built: run `npm ci` (or `npm run build`) in the project first");
  process.exit(2);
}
// In a checkout, sources changed since the last build (a pull, an edit) would otherwise run as
// they were: say so. A package installed from the registry has no src/.
const sources = join(root, "src");
if (existsSync(sources) && newestChange(sources, 2000) > statSync(compiled).mtimeMs) {
  console.error(
    "physalia: warning: src/ changed after dist/ was built, so this runs the older build; run `npm run build`",
  );
}
await import(compiled);

/** The latest modification time of the files under `directory`, looking at `filesMax` at most. */
function newestChange(directory, filesMax) {
  let newest = 0;
  let seen = 0;
  const pending = [directory];
  while (pending.length > 0 && seen < filesMax) {
    const current = pending.pop();
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) pending.push(path);
      // Tests are not built: a change to one leaves the build as current as it was.
      else if (entry.isFile() && !entry.name.endsWith(".test.ts") && seen++ < filesMax)
        newest = Math.max(newest, statSync(path).mtimeMs);
    }
  }
  return newest;
}
