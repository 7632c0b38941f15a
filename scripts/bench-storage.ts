/**
 * Benchmark of the lmdb storage adapter: durable batches per second and per-batch latency
 * (write() to done(null)) for batches of 1, 100 and 1,000 node writes, one batch in flight at a
 * time as the server runs it. Each node write is one accepted entry of one ~250-byte command for
 * an existing node, as in steady state; every tenth also raises the node's promise (a header
 * rewrite). Prints the fsync floor of the same disk first: an lmdb commit flushes its pages and
 * then its meta page, so a durable commit costs about two fsyncs.
 *
 *   npx tsx scripts/bench-storage.ts [--dir PATH] [--seconds N]
 */
import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CellMachine, type Command, commandCodec, OPERATION_FORMAT_VERSION } from "../src/cell/index.ts";
import { initialMembership, makeBallot, type NodeWrite } from "../src/paxos/index.ts";
import { LmdbStorage, type StorageBatch } from "../src/storage/index.ts";

function option(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index < 0 ? fallback : (process.argv[index + 1] ?? fallback);
}

const baseDirectory = option("dir", tmpdir());
const secondsPerSize = Number(option("seconds", "3"));
const batchSizes = [1, 100, 1_000];
const samplesMax = 100_000;

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] as number;
}

// ---------------------------------------------------------------- fsync floor

function fsyncFloor(): { medianUs: number; p99Us: number } {
  const directory = mkdtempSync(join(baseDirectory, "physalia-fsync-"));
  const fd = openSync(join(directory, "probe"), "w");
  const block = Buffer.alloc(512, 7);
  const samples: number[] = [];
  try {
    for (let i = 0; i < 2_000; i++) {
      writeSync(fd, block, 0, block.length, (i % 8) * block.length);
      const started = process.hrtime.bigint();
      fsyncSync(fd);
      samples.push(Number(process.hrtime.bigint() - started) / 1_000);
    }
  } finally {
    closeSync(fd);
    rmSync(directory, { recursive: true, force: true });
  }
  samples.sort((a, b) => a - b);
  return { medianUs: percentile(samples, 50), p99Us: percentile(samples, 99) };
}

// ---------------------------------------------------------------- workload

function command(session: number, seq: number): Command {
  return {
    version: OPERATION_FORMAT_VERSION,
    session,
    seq,
    newSession: seq === 1,
    op: {
      type: "txn",
      txn: {
        conditions: [],
        reads: [],
        writes: [{ item: "config", op: "put", value: new Uint8Array(200).fill(seq % 256) }],
      },
    },
  };
}

const node = { serverId: "s1", incarnation: 1 };
const snapshot = {
  index: 0,
  membership: initialMembership([
    node,
    { serverId: "s2", incarnation: 2 },
    { serverId: "s3", incarnation: 3 },
  ]),
  state: new CellMachine().snapshot(),
};
const cellKey = (i: number): string => `vol-${i.toString(16).padStart(6, "0")}`;

function persist(storage: LmdbStorage<Command>, batch: StorageBatch<Command>): Promise<void> {
  return new Promise((resolve, reject) =>
    storage.write(batch, (error) => (error === null ? resolve() : reject(error))),
  );
}

async function measure(size: number): Promise<string> {
  const directory = mkdtempSync(join(baseDirectory, "physalia-bench-storage-"));
  const storage = LmdbStorage.open({ path: directory, codec: commandCodec });
  try {
    const setup: NodeWrite<Command>[] = [];
    for (let i = 0; i < size; i++) {
      setup.push({
        cellKey: cellKey(i),
        node,
        promised: makeBallot(1, 1),
        entries: [],
        snapshot,
        truncateThrough: 0,
      });
    }
    await persist(storage, { writes: setup, removed: [], pointers: [] });
    const latenciesMs: number[] = [];
    const started = performance.now();
    let slot = 0;
    while (performance.now() - started < secondsPerSize * 1_000 && latenciesMs.length < samplesMax) {
      slot += 1;
      const writes: NodeWrite<Command>[] = [];
      for (let i = 0; i < size; i++) {
        writes.push({
          cellKey: cellKey(i),
          node,
          promised: slot % 10 === 0 ? makeBallot(slot, 1) : null,
          entries: [
            {
              slot,
              ballot: makeBallot(1, 1),
              value: {
                kind: "commands",
                stampMs: slot,
                stampBallot: makeBallot(1, 1),
                commands: [command(i + 1, slot)],
              },
            },
          ],
          snapshot: null,
          truncateThrough: 0,
        });
      }
      const t = performance.now();
      await persist(storage, { writes, removed: [], pointers: [] });
      latenciesMs.push(performance.now() - t);
    }
    const elapsedS = (performance.now() - started) / 1_000;
    const bytesPerBatch = storage.stats().bytesWritten / storage.stats().batchesWritten;
    latenciesMs.sort((a, b) => a - b);
    const batchesPerS = latenciesMs.length / elapsedS;
    return [
      String(size).padStart(6),
      batchesPerS.toFixed(0).padStart(10),
      (batchesPerS * size).toFixed(0).padStart(13),
      percentile(latenciesMs, 50).toFixed(3).padStart(9),
      percentile(latenciesMs, 99).toFixed(3).padStart(9),
      (bytesPerBatch / 1024).toFixed(1).padStart(10),
      String(latenciesMs.length).padStart(8),
    ].join("  ");
  } finally {
    await storage.close();
    rmSync(directory, { recursive: true, force: true });
  }
}

const floor = fsyncFloor();
console.log(`disk: ${baseDirectory}`);
console.log(
  `fsync of a 512-byte write: median ${floor.medianUs.toFixed(0)} us, p99 ${floor.p99Us.toFixed(0)} us`,
);
console.log(
  `floor for one durable lmdb commit (pages + meta page, two fsyncs): ~${((2 * floor.medianUs) / 1000).toFixed(3)} ms`,
);
console.log("");
console.log(" nodes  batches/s  node writes/s  p50 (ms)  p99 (ms)  KiB/batch  batches");
for (const size of batchSizes) console.log(await measure(size));
