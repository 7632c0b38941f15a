/**
 * A client process of the load benchmarks (started by scripts/bench/load.ts over IPC): runs
 * closed-loop clients, each with one operation at a time on a random cell (or etcd key), and
 * reports what completed inside the measured window.
 *
 * Parent -> worker: start (configuration), go, measure, stop. Worker -> parent: ready, result.
 */
import type { Etcd3 } from "etcd3";
import { PhysaliaClient } from "../../src/index.ts";
import { FloorClient } from "./floor-wire.ts";

export type LoadTarget =
  | { readonly kind: "physalia"; readonly colonyFile: string }
  | { readonly kind: "etcd"; readonly endpoints: readonly string[] }
  | { readonly kind: "floor"; readonly ports: readonly number[] };

export interface WorkerStart {
  readonly type: "start";
  readonly target: LoadTarget;
  /** Closed-loop clients in this process. */
  readonly clients: number;
  /** Client connections (PhysaliaClient or Etcd3 instances) the clients share, round robin. */
  readonly connections: number;
  readonly keys: readonly string[];
  readonly operation: "write" | "read";
  readonly seed: number;
  /** Each client waits this long after each operation (0: none, a saturating load). */
  readonly thinkMs: number;
}

export type ParentMessage = WorkerStart | { readonly type: "go" | "measure" | "stop" };

export interface WorkerResult {
  readonly type: "result";
  readonly completed: number;
  readonly errors: number;
  readonly firstError: string | null;
  readonly windowMs: number;
  readonly latenciesUs: number[];
  /** The operations that completed during the warm-up (from go to measure): reported, not judged. */
  readonly warmup: { readonly windowMs: number; readonly latenciesUs: number[] };
}

export type WorkerMessage =
  | { readonly type: "ready" }
  | WorkerResult
  | { readonly type: "failed"; error: string };

type Operation = (key: string, n: number) => Promise<unknown>;

interface Connection {
  readonly write: Operation;
  readonly read: Operation;
  close(): Promise<void>;
}

const value = new Uint8Array(16).fill(0x61);

async function connectPhysalia(colonyFile: string): Promise<Connection> {
  const client = await PhysaliaClient.connect({ colony: colonyFile });
  return {
    write: (key, n) => client.cell(key).put(`k${n & 3}`, value),
    read: (key, n) => client.cell(key).get(`k${n & 3}`),
    close: () => client.close(),
  };
}

async function connectFloor(ports: readonly number[]): Promise<Connection> {
  const client = await FloorClient.connect(ports);
  const read = () => Promise.reject(new Error("the replication floor has no reads"));
  return { write: (key) => client.write(key, value), read, close: () => client.close() };
}

async function connectEtcd(endpoints: readonly string[]): Promise<Connection> {
  const { Etcd3 } = await import("etcd3");
  const client: Etcd3 = new Etcd3({ hosts: [...endpoints] });
  const buffer = Buffer.from(value);
  return {
    write: (key, n) =>
      client
        .put(`${key}/k${n & 3}`)
        .value(buffer)
        .exec(),
    read: (key, n) => client.get(`${key}/k${n & 3}`).buffer(),
    close: async () => client.close(),
  };
}

/** Resolves once the message is handed to the IPC channel (exiting before that would lose it). */
function send(message: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (process.send === undefined) resolve();
    else process.send(message, undefined, {}, () => resolve());
  });
}

let running = false;
let measuring = false;
let windowStartMs = 0;
let completed = 0;
let errors = 0;
let firstError: string | null = null;
let latenciesUs: number[] = [];
let warmupStartMs = 0;
let warmupLatenciesUs: number[] = [];
let warmup: WorkerResult["warmup"] = { windowMs: 0, latenciesUs: [] };
let connections: Connection[] = [];
let loops: Promise<void>[] = [];
let configuration: WorkerStart | null = null;

async function clientLoop(index: number, config: WorkerStart): Promise<void> {
  const connection = connections[index % connections.length] as Connection;
  const operation = config.operation === "write" ? connection.write : connection.read;
  let seed = (config.seed * 7919 + index * 104729 + 1) >>> 0;
  let n = 0;
  while (running) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const key = config.keys[seed % config.keys.length] as string;
    n += 1;
    const started = performance.now();
    try {
      await operation(key, n);
      const ended = performance.now();
      if (measuring && started >= windowStartMs) {
        completed += 1;
        latenciesUs.push((ended - started) * 1000);
      } else if (!measuring) {
        warmupLatenciesUs.push((ended - started) * 1000);
      }
      if (config.thinkMs > 0) await new Promise((resolve) => setTimeout(resolve, config.thinkMs));
    } catch (error) {
      if (measuring) errors += 1;
      firstError ??= `${(error as Error).name}: ${(error as Error).message}`;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

async function onMessage(message: ParentMessage): Promise<void> {
  switch (message.type) {
    case "start": {
      configuration = message;
      const target = message.target;
      connections = await Promise.all(
        Array.from({ length: message.connections }, () =>
          target.kind === "physalia"
            ? connectPhysalia(target.colonyFile)
            : target.kind === "floor"
              ? connectFloor(target.ports)
              : connectEtcd(target.endpoints),
        ),
      );
      await send({ type: "ready" });
      return;
    }
    case "go": {
      const config = configuration;
      if (config === null) throw new Error("go before start");
      running = true;
      warmupStartMs = performance.now();
      loops = Array.from({ length: config.clients }, (_, i) => clientLoop(i, config));
      return;
    }
    case "measure":
      completed = 0;
      errors = 0;
      latenciesUs = [];
      windowStartMs = performance.now();
      warmup = { windowMs: windowStartMs - warmupStartMs, latenciesUs: warmupLatenciesUs };
      warmupLatenciesUs = [];
      measuring = true;
      return;
    case "stop": {
      const windowMs = performance.now() - windowStartMs;
      measuring = false;
      const sent = send({ type: "result", completed, errors, firstError, windowMs, latenciesUs, warmup });
      running = false;
      // Operations in flight end with the connections (or time out): do not wait for them long.
      await Promise.race([Promise.all(loops), new Promise((resolve) => setTimeout(resolve, 2000))]);
      await Promise.race([
        Promise.all(connections.map((c) => c.close())),
        new Promise((resolve) => setTimeout(resolve, 2000)),
      ]);
      await sent;
      process.exit(0);
    }
  }
}

process.on("message", (message: ParentMessage) => {
  onMessage(message).catch((error: unknown) => {
    send({ type: "failed", error: String((error as Error).stack ?? error) }).then(() => process.exit(1));
  });
});
// The parent's end is this process's end too.
process.on("disconnect", () => process.exit(0));
