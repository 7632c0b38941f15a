import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { type CheckpointJob, type CheckpointResult, WorkerRunner } from "./checkpoint-runner.ts";

const directories: string[] = [];
afterEach(() => {
  for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
});

/** A worker module that takes checkpoint requests and never answers them (a hung worker). */
function hangingWorker(): { path: string; entry: URL } {
  const path = mkdtempSync(join(tmpdir(), "physalia-hung-worker-"));
  directories.push(path);
  const file = join(path, "hung-worker.mjs");
  writeFileSync(
    file,
    'import { workerData } from "node:worker_threads";\n' +
      "// Takes every request and answers none.\n" +
      "workerData.port.on('message', () => {});\n",
  );
  return { path, entry: pathToFileURL(file) };
}

function job(): CheckpointJob {
  // The changes' buffer is moved to the worker: each job has its own.
  return { changes: new Uint8Array(8), throughSeq: 1, forget: [] };
}

describe("the checkpoint worker runner", () => {
  it("fails a checkpoint its worker leaves unanswered though nothing waits for it, and every later one", async () => {
    const { path, entry } = hangingWorker();
    const runner = new WorkerRunner(path, entry, 300);
    const started = performance.now();
    const result = await new Promise<CheckpointResult>((resolve) => runner.start(job(), resolve));
    expect(result).toEqual({ ok: false, error: "the checkpoint worker did not answer within 0.3 s" });
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    expect(runner.busy).toBe(false);
    const later = await new Promise<CheckpointResult>((resolve) => runner.start(job(), resolve));
    expect(later).toEqual(result);
    await runner.close();
  }, 10_000);

  it("stops a blocked wait for a hung worker at its bound", async () => {
    const { path, entry } = hangingWorker();
    const runner = new WorkerRunner(path, entry, 300);
    let result: CheckpointResult | null = null;
    runner.start(job(), (r) => {
      result = r;
    });
    const started = performance.now();
    runner.waitIdle();
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(result).toEqual({ ok: false, error: "the checkpoint worker did not answer within 0.3 s" });
    await runner.close();
  }, 10_000);
});
