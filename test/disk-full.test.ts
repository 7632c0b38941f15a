/**
 * A server whose disk fills up, with real processes and a real (small) file system: it must stop
 * itself saying the disk is full, refuse to start again until space is freed, and then come back
 * with everything it acknowledged, checked by reading every acknowledged value from a majority
 * that needs it (test/support/disk-full-scenario.ts). Needs root on Linux, for a private mount
 * namespace and a tmpfs in it; skipped, saying why, elsewhere.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { DiskFullResult } from "./support/disk-full-scenario.ts";
import { privateMountsUnavailable, runInPrivateMounts } from "./support/netlab.ts";

const root = join(import.meta.dirname, "..");
const skipped = privateMountsUnavailable();
if (skipped !== null) console.log(`disk-full test skipped: ${skipped}`);

function runScenario(plantedLoss: boolean): Promise<DiskFullResult> {
  const dir = mkdtempSync(join(tmpdir(), "physalia-disk-full-"));
  return runInPrivateMounts<DiskFullResult>(
    [
      "--import",
      "tsx",
      join(root, "test", "support", "disk-full-scenario.ts"),
      dir,
      ...(plantedLoss ? ["--planted-loss"] : []),
    ],
    root,
    170_000,
  ).finally(() => rmSync(dir, { recursive: true, force: true }));
}

describe.skipIf(skipped !== null)("a server whose disk fills up", () => {
  it("stops saying the disk is full, refuses to start until space is freed, then loses nothing", async () => {
    const result = await runScenario(false);
    console.log(
      `disk full: ${result.acknowledged} values acknowledged; s1 ${result.s1Exit}; started on the full disk: ` +
        `exit ${result.fullRestartExit}; after space was freed healthy in ${result.restartHealthyMs} ms; ` +
        `${result.readBack} values read back without s2, s3 and s4, ${result.missing.length} missing`,
    );
    expect(result.otherExits, "servers other than s1 that exited by themselves").toEqual([]);
    // s1 stopped itself (exit code 9), its log naming the full disk and what to do.
    expect(result.s1Exit).toMatch(/^server s1 stopped \(exit code 9\)/);
    expect(result.s1LastLog).toContain('"server stopped"');
    expect(result.s1LastLog).toMatch(/the disk is full \(\d+ bytes free on the file system holding .*s1\)/);
    expect(result.s1LastLog).toContain("free space there, then start the server again");
    // It had warned before, in its log: its 48 MiB file system was under the warning's threshold
    // from the start, and so was every check after.
    expect(result.s1Warnings.length).toBeGreaterThan(0);
    expect(result.s1Warnings[0]).toMatch(
      /"level":"warn".*the disk is nearly full: .* free on the file system holding .*s1/,
    );
    // On the full disk it does not start, and says why in one line.
    expect(result.fullRestartExit).toBe(9);
    expect(result.fullRestartOutput).toMatch(/"msg":"server s1 could not start: .*the disk is full/);
    expect(result.fullRestartOutput).not.toMatch(/\n\s+at /);
    // With space, it answers again and nothing it acknowledged is lost.
    expect(result.restartHealthyMs).toBeLessThan(30_000);
    expect(result.acknowledged).toBeGreaterThan(100);
    expect(result.missing).toEqual([]);
    expect(result.readBack).toBe(result.acknowledged);
  }, 200_000);

  it("catches a planted loss: s1 started again on an emptied data directory", async () => {
    // The same run, but s1's data directory is emptied before it starts again: what s1
    // acknowledged is gone, and the reads that need s1 must notice.
    const result = await runScenario(true);
    console.log(
      `planted loss of s1's data: ${result.acknowledged} values acknowledged, ${result.readBack} read back; ` +
        `first missing: ${result.missing[0] ?? "none"}`,
    );
    expect(result.acknowledged).toBeGreaterThan(100);
    expect(result.missing.length).toBeGreaterThan(0);
    expect(result.readBack).toBeLessThan(result.acknowledged);
  }, 200_000);
});
