import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Children } from "../scripts/bench/common.ts";
import { type FloorKind, startFloor } from "../scripts/bench/floor.ts";
import { FloorClient, leaderOf } from "../scripts/bench/floor-wire.ts";

// The replication floor is an instrument: Physalia's benchmark figures are published as ratios to
// it. These tests hold it to what it claims, that a write is answered only once 4 of the 7
// journals hold it, so that it cannot look cheaper by answering early.

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function journalsHolding(dir: string, marker: Buffer): number {
  let holding = 0;
  for (let i = 0; i < 7; i++) if (readFileSync(join(dir, `journal-${i}`)).includes(marker)) holding += 1;
  return holding;
}

/**
 * Starts a floor of `kind` with a client before the describe's tests, and stops both after them
 * (resuming any replica a test left stopped).
 */
function floorUnderTest(kind: FloorKind) {
  const children = new Children();
  const state = {
    floor: null as unknown as Awaited<ReturnType<typeof startFloor>>,
    client: null as unknown as FloorClient,
    stopped: [] as number[],
  };
  beforeAll(async () => {
    state.floor = await startFloor(children, ["key"], 2, kind);
    state.client = await FloorClient.connect(state.floor.ports);
  }, 60_000);
  afterAll(async () => {
    for (const pid of state.stopped) process.kill(pid, "SIGCONT");
    await state.client?.close();
    await children.stopAll();
    children.removeTempDirs();
  });
  return state;
}

/**
 * Writes `marker` to `key` while too few replicas run for a quorum: checks that it reaches exactly
 * 3 journals and is not answered. Then resumes the first stopped replica and checks that the
 * write is answered and in at least 4 journals.
 */
async function writeHeldAtThree(t: ReturnType<typeof floorUnderTest>, key: string, marker: Buffer) {
  let answered = false;
  const write = t.client.write(key, marker).then(() => {
    answered = true;
  });
  // The replicas still running journal it; then nothing more may happen.
  for (let waited = 0; journalsHolding(t.floor.dir, marker) < 3 && waited < 10_000; waited += 50)
    await settle(50);
  await settle(500);
  expect(answered).toBe(false);
  expect(journalsHolding(t.floor.dir, marker)).toBe(3);

  process.kill(t.stopped.shift() as number, "SIGCONT");
  await write;
  expect(journalsHolding(t.floor.dir, marker)).toBeGreaterThanOrEqual(4);
}

describe("the replication floor (npm run bench -- floor)", () => {
  const t = floorUnderTest("stream");

  it("answers writes, each then in at least 4 journals", async () => {
    for (let i = 0; i < 20; i++) {
      const marker = Buffer.from(`floor-write-${i}-`.padEnd(24, "x"));
      await t.client.write(`key-${i}`, marker);
      expect(journalsHolding(t.floor.dir, marker)).toBeGreaterThanOrEqual(4);
    }
  }, 30_000);

  it("does not answer a write while only 3 of the 7 replicas run, and answers it once a 4th does", async () => {
    const key = "key-quorum";
    const leader = leaderOf(key, 7);
    const pids = t.floor.serverPids();
    const followers = [0, 1, 2, 3, 4, 5, 6].filter((i) => i !== leader).slice(0, 4);
    for (const i of followers) {
      process.kill(pids[i] as number, "SIGSTOP");
      t.stopped.push(pids[i] as number);
    }
    // The leader and the 2 running followers journal it.
    await writeHeldAtThree(t, key, Buffer.from("floor-quorum-write-".padEnd(24, "q")));
    for (const pid of t.stopped.splice(0)) process.kill(pid, "SIGCONT");
  }, 30_000);
});

describe("the per-cell replication floor (npm run bench -- floor --per-cell)", () => {
  const t = floorUnderTest("cells");

  it("answers writes, each then in at least 4 journals, and soon in all 7", async () => {
    for (let i = 0; i < 20; i++) {
      const marker = Buffer.from(`cells-write-${i}-`.padEnd(24, "x"));
      await t.client.write(`key-${i % 3}`, marker);
      expect(journalsHolding(t.floor.dir, marker)).toBeGreaterThanOrEqual(4);
    }
    // The 3 followers that were not asked for a vote get each slot once it is chosen.
    const last = Buffer.from("cells-write-19-".padEnd(24, "x"));
    for (let waited = 0; journalsHolding(t.floor.dir, last) < 7 && waited < 5_000; waited += 50)
      await settle(50);
    expect(journalsHolding(t.floor.dir, last)).toBe(7);
  }, 30_000);

  it("does not answer a write that only 3 journals hold, and answers it once a 4th does", async () => {
    const key = "key-quorum";
    const leader = leaderOf(key, 7);
    const pids = t.floor.serverPids();
    // The leader asks the 3 replicas after it for their votes; one of them is stopped.
    const voter = pids[(leader + 2) % 7] as number;
    process.kill(voter, "SIGSTOP");
    t.stopped.push(voter);
    // The leader and its 2 other voters journal it.
    await writeHeldAtThree(t, key, Buffer.from("cells-quorum-write-".padEnd(24, "q")));
  }, 30_000);
});
