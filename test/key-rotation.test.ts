/**
 * Rotating the colony key on a running colony of server processes (docs/OPERATIONS.md section
 * 1.4), in its three steps: every key file holds the old key and the new one, then the new key and
 * the old one, then the new key alone. A server takes a step by a restart, or by SIGHUP without
 * one. After every server's step, clients holding the keys of the step before and of the step
 * under way must both write. Once the new key alone is left, a client holding only the old one
 * must get nowhere, and every write made must be in the cell.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { keyFingerprint, type Topology } from "../src/cli/colony.ts";
import { PhysaliaClient } from "../src/index.ts";
import { createCells, localTopology } from "./support/colony.ts";
import { ProcessColony } from "./support/fault-colony.ts";

const root = join(import.meta.dirname, "..");
const cellKey = "rotated-1";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Asks `condition` every 50 ms until it holds; fails naming `what` after 10 s. */
async function waitFor(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await sleep(50);
  }
}

function writeKeys(file: string, keys: readonly Buffer[]): void {
  writeFileSync(file, `${keys.map((key) => key.toString("hex")).join("\n")}\n`, { mode: 0o600 });
}

/** Three server processes, each with its own key file holding `oldKey`, and a cell on them. */
async function rotationColony(oldKey: Buffer) {
  const dir = mkdtempSync(join(tmpdir(), "physalia-rotation-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const topology: Topology = await localTopology(3, 3, "keys");
  const ids = topology.servers.map((s) => s.id);
  const keyFileOf = (id: string) => join(dir, `${id}.key`);
  for (const id of ids) writeKeys(keyFileOf(id), [oldKey]);
  const colony = new ProcessColony(
    dir,
    topology,
    Object.fromEntries(ids.map((id) => [id, { keyFile: keyFileOf(id) }])),
  );
  cleanups.push(() => colony.stopAll());
  for (const id of ids) colony.start(id);
  await Promise.all(ids.map((id) => colony.healthy(id)));
  await createCells(topology, oldKey, [cellKey]);

  const client = (keys: readonly Buffer[]) =>
    PhysaliaClient.connect({
      servers: topology.servers,
      cellSize: topology.cellSize,
      colonyKey: keys[0] as Buffer,
      alsoAcceptedKeys: keys.slice(1),
      requestTimeoutMs: 300,
    });
  let written = 0;
  /** One `add` through a new client holding `keys`; throws naming `what` if it fails. */
  const write = async (keys: readonly Buffer[], what: string) => {
    const c = await client(keys);
    try {
      await c.cell(cellKey).add("n", 1n);
      written += 1;
    } catch (error) {
      throw new Error(`${what}: ${(error as Error).message}`);
    } finally {
      await c.close();
    }
  };
  /** The fingerprints of the keys a server holds, as its /status gives them. */
  const fingerprints = async (id: string) => {
    const s = topology.servers.find((server) => server.id === id);
    const response = await fetch(`http://${s?.host}:${s?.adminPort}/status`);
    return ((await response.json()) as { colonyKeys: string[] }).colonyKeys;
  };
  /** After the rotation: a client with the old key alone gets nothing done, and the cell holds every write. */
  const checkEnd = async (oldKeyAlone: Buffer, newKey: Buffer) => {
    const outsider = await client([oldKeyAlone]);
    let outcome = "pending";
    outsider
      .cell(cellKey)
      .add("n", 1n)
      .then(
        () => {
          outcome = "written";
        },
        () => {
          outcome = "failed";
        },
      );
    await sleep(3000);
    await outsider.close();
    expect(outcome).not.toBe("written");
    const reader = await client([newKey]);
    try {
      expect(await reader.cell(cellKey).get("n")).toBe(BigInt(written));
    } finally {
      await reader.close();
    }
    expect(colony.unexpectedExits).toEqual([]);
  };
  return { dir, topology, ids, keyFileOf, colony, write, fingerprints, checkEnd, written: () => written };
}

describe("colony key rotation on server processes", () => {
  it("keeps the colony writable through three rolling restarts, and shuts the old key out after them", async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const { dir, topology, ids, keyFileOf, colony, write, fingerprints, checkEnd, written } =
      await rotationColony(oldKey);
    const status = (keys: readonly Buffer[]) => {
      writeKeys(join(dir, "colony.key"), keys);
      const run = spawnSync(
        process.execPath,
        ["--import", "tsx", "src/cli/main.ts", "status", "--colony", colony.colonyFile],
        { cwd: root, encoding: "utf8", env: { ...process.env, PHYSALIA_COLONY_KEY: "" }, timeout: 30_000 },
      );
      expect(run.status, run.stderr).toBe(0);
      return run.stdout;
    };

    await write([oldKey], "before the rotation");
    const steps: Buffer[][] = [[oldKey, newKey], [newKey, oldKey], [newKey]];
    let before: readonly Buffer[] = [oldKey];
    for (const [step, keys] of steps.entries()) {
      for (const [i, id] of ids.entries()) {
        writeKeys(keyFileOf(id), keys);
        await colony.stop(id);
        colony.start(id);
        await colony.healthy(id);
        expect(await fingerprints(id)).toEqual(keys.map(keyFingerprint));
        await write(before, `step ${step + 1}, ${id} restarted, a client with the keys before the step`);
        await write(keys, `step ${step + 1}, ${id} restarted, a client with the step's keys`);

        if (step === 1 && i === 0) {
          // s1 signs with the new key, s2 and s3 with the old one. Without s2, a write needs s1
          // and s3 to accept each other's frames.
          const other = ids[1] as string;
          await colony.stop(other);
          await write(keys, "step 2, s1 signing with the new key and s3 with the old, s2 stopped");
          expect(
            await colony.metric(id, "physalia_transport_frames_received_other_key_total", 2000),
          ).toBeGreaterThan(0);
          colony.start(other);
          await colony.healthy(other);

          const shown = status(before);
          expect(shown).toContain("a rotation is under way");
          expect(shown).toContain(
            `${id}: signs with ${keyFingerprint(newKey)}, also accepts ${keyFingerprint(oldKey)}`,
          );
          expect(shown).toContain(
            `${other}: signs with ${keyFingerprint(oldKey)}, also accepts ${keyFingerprint(newKey)}`,
          );
          expect(shown).not.toContain("does not accept");
          expect(status([randomBytes(32)])).toContain(
            `${ids.join(", ")} do not accept the key this command signs with`,
          );
        }
      }
      // The admin port takes a token derived from either key the servers hold.
      await createCells(topology, keys[keys.length - 1] as Buffer, [`created-in-step-${step + 1}`]);
      before = keys;
    }
    await expect(createCells(topology, oldKey, ["created-with-the-old-key"])).rejects.toThrow(/401/);
    expect(status([newKey])).not.toContain("a rotation is under way");

    await checkEnd(oldKey, newKey);
    expect(written()).toBe(1 + 2 * steps.length * ids.length + 1);
  }, 180_000);

  it("takes each step on SIGHUP without a restart, and keeps its keys when the new ones are unusable", async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const { ids, keyFileOf, colony, write, fingerprints, checkEnd, written } = await rotationColony(oldKey);
    const takes = async (id: string, expected: string[]) =>
      JSON.stringify(await fingerprints(id)) === JSON.stringify(expected);
    await write([oldKey], "before the rotation");

    // A key file it cannot use: the server says so and goes on with the keys it has.
    const first = ids[0] as string;
    writeFileSync(keyFileOf(first), "zz-not-a-key\n");
    colony.hangUp(first);
    const logged = async () => readFileSync(colony.logFile(first), "utf8");
    await waitFor(
      async () => (await logged()).includes("the colony keys were not reloaded"),
      `${first} reporting its unusable key file`,
    );
    expect(await logged()).toMatch(/not hexadecimal/);
    expect(await fingerprints(first)).toEqual([keyFingerprint(oldKey)]);
    await write([oldKey], "after an unusable key file");

    const steps: Buffer[][] = [[oldKey, newKey], [newKey, oldKey], [newKey]];
    let before: readonly Buffer[] = [oldKey];
    for (const [step, keys] of steps.entries()) {
      for (const id of ids) {
        writeKeys(keyFileOf(id), keys);
        colony.hangUp(id);
        await waitFor(() => takes(id, keys.map(keyFingerprint)), `${id} taking the keys of step ${step + 1}`);
        await write(before, `step ${step + 1}, ${id} reloaded, a client with the keys before the step`);
        await write(keys, `step ${step + 1}, ${id} reloaded, a client with the step's keys`);
      }
      before = keys;
    }
    // A key file other users may read: the server still takes it, and warns.
    chmodSync(keyFileOf(first), 0o644);
    colony.hangUp(first);
    await waitFor(
      async () =>
        (await logged()).includes("can be read or changed by users other than its owner (mode 644)"),
      `${first} warning of its exposed key file`,
    );

    await checkEnd(oldKey, newKey);
    expect(written()).toBe(2 + 2 * steps.length * ids.length);
    for (const id of ids) expect(colony.isRunning(id)).toBe(true);
  }, 120_000);
});
