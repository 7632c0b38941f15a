import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineConfig } from "vitest/config";

// The CLI keeps its client sessions between runs under the user's state directory; the tests'
// CLI runs keep theirs in a directory of their own instead (src/cli/session-file.ts).
process.env.PHYSALIA_STATE_DIR ??= mkdtempSync(join(tmpdir(), "physalia-test-state-"));

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers: 2,
  },
});
