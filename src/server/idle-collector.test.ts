import { describe, expect, it } from "vitest";
import { IdleCollector } from "./idle-collector.ts";

const MiB = 2 ** 20;

function setup(options: { asynchronous?: boolean } = {}) {
  const state = { heap: 100 * MiB, calls: 0, resolve: null as (() => void) | null };
  const collector = new IdleCollector({
    collect: () => {
      state.calls += 1;
      if (!options.asynchronous) {
        state.heap = 120 * MiB;
        return undefined;
      }
      return new Promise<void>((resolve) => {
        state.resolve = () => {
          state.heap = 120 * MiB;
          resolve();
        };
      });
    },
    heapUsedBytes: () => state.heap,
    quietMs: 5000,
    growthBytes: 64 * MiB,
    releasedMin: 10_000,
  });
  return { state, collector };
}

describe("idle collector", () => {
  it("collects once the work has stood still for the quiet time and the heap has grown", () => {
    const { state, collector } = setup();
    expect(collector.thresholdBytes).toBe(150 * MiB + 64 * MiB);
    state.heap = 900 * MiB;
    expect(collector.observe(0, 10, 0)).toBe(false);
    expect(collector.observe(4999, 10, 0)).toBe(false);
    expect(state.calls).toBe(0);
    expect(collector.observe(5000, 10, 0)).toBe(true);
    expect(state.calls).toBe(1);
    expect(collector.collections).toBe(1);
    // The baseline is what the collection left: no second collection without new growth.
    expect(collector.thresholdBytes).toBe(180 * MiB + 64 * MiB);
    expect(collector.observe(20_000, 10, 0)).toBe(false);
    expect(state.calls).toBe(1);
  });

  it("never collects while the server works, however large the heap", () => {
    const { state, collector } = setup();
    state.heap = 4000 * MiB;
    for (let t = 0; t < 60_000; t += 1000) expect(collector.observe(t, t, 0)).toBe(false);
    expect(state.calls).toBe(0);
  });

  it("leaves a quiet server alone when its heap has not grown enough", () => {
    const { state, collector } = setup();
    state.heap = 200 * MiB;
    for (let t = 0; t < 60_000; t += 1000) collector.observe(t, 1, 0);
    expect(state.calls).toBe(0);
  });

  it("collects after many nodes were evicted, though their garbage does not grow the heap", () => {
    const { state, collector } = setup();
    state.heap = 600 * MiB;
    collector.observe(0, 1, 0);
    collector.observe(6000, 1, 0);
    state.calls = 0;
    // Evictions move the work counter: nothing until they stop.
    expect(collector.observe(7000, 2, 9_999)).toBe(false);
    expect(collector.observe(20_000, 2, 9_999)).toBe(false);
    expect(collector.observe(21_000, 3, 25_000)).toBe(false);
    expect(collector.observe(25_999, 3, 25_000)).toBe(false);
    expect(collector.observe(26_000, 3, 25_000)).toBe(true);
    expect(state.calls).toBe(1);
    // The same evictions do not count twice.
    expect(collector.observe(40_000, 3, 25_000)).toBe(false);
    expect(state.calls).toBe(1);
  });

  it("starts no second collection while one is running, and takes the new baseline when it ends", async () => {
    const { state, collector } = setup({ asynchronous: true });
    state.heap = 900 * MiB;
    collector.observe(0, 1, 0);
    expect(collector.observe(6000, 1, 0)).toBe(true);
    expect(collector.observe(7000, 1, 0)).toBe(false);
    expect(state.calls).toBe(1);
    state.resolve?.();
    await Promise.resolve();
    await Promise.resolve();
    expect(collector.thresholdBytes).toBe(180 * MiB + 64 * MiB);
    state.heap = 900 * MiB;
    expect(collector.observe(8000, 1, 0)).toBe(true);
    expect(state.calls).toBe(2);
  });

  it("survives a collector that throws, and tries again only after more growth", () => {
    let heap = 100 * MiB;
    const collector = new IdleCollector({
      collect: () => {
        throw new Error("not exposed");
      },
      heapUsedBytes: () => heap,
      quietMs: 0,
      growthBytes: 0,
      releasedMin: 10_000,
    });
    heap = 900 * MiB;
    collector.observe(0, 1, 0);
    expect(collector.observe(1, 1, 0)).toBe(true);
    expect(collector.observe(2, 1, 0)).toBe(false);
    heap = 1400 * MiB;
    expect(collector.observe(3, 1, 0)).toBe(true);
  });
});
