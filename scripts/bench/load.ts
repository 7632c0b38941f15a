/**
 * The closed-loop load of the throughput and latency benchmarks, shared by Physalia and etcd:
 * client processes (scripts/bench/load-worker.ts) run the clients; this side starts them, warms
 * up, opens the measured window, and reads the CPU of servers and clients from /proc over it.
 */
import type { ChildProcess } from "node:child_process";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import {
  type Children,
  cpuUsOf,
  type LatencySummary,
  machineBusyUs,
  mainThreadCpuUsOf,
  round,
  sleep,
  summarizeLatencies,
} from "./common.ts";
import type { LoadTarget, ParentMessage, WorkerMessage, WorkerResult } from "./load-worker.ts";

const cores = availableParallelism();
const workerScript = join(import.meta.dirname, "load-worker.ts");

export interface LoadOptions {
  readonly target: LoadTarget;
  readonly clients: number;
  readonly clientProcesses: number;
  readonly connectionsPerProcess: number;
  readonly keys: readonly string[];
  readonly operation: "write" | "read";
  readonly warmupSeconds: number;
  readonly seconds: number;
  /** Each client's wait after each operation; 0 (the default) for a saturating closed loop. */
  readonly thinkMs?: number;
  /** The server processes whose CPU is charged to the commits. */
  readonly serverPids: () => readonly number[];
  /** Server counters read at both ends of the window; their differences are reported. */
  readonly counters?: () => Promise<Record<string, number>>;
}

export interface LoadResult {
  readonly operation: "write" | "read";
  readonly clients: number;
  readonly clientProcesses: number;
  readonly windowSeconds: number;
  readonly completed: number;
  readonly perSecond: number;
  readonly errors: number;
  readonly firstError: string | null;
  readonly latency: LatencySummary;
  /** Server CPU over the window (all server processes) per completed operation. */
  readonly serverCpuUsPerOperation: number;
  /**
   * The part of it in the servers' main threads (the event loops); the rest is their other
   * threads: checkpoint workers, V8's collector helpers, lmdb's and libuv's threads.
   */
  readonly serverMainThreadCpuUsPerOperation: number;
  readonly clientCpuUsPerOperation: number;
  /** Cores the servers and the client processes used over the window. */
  readonly serverCores: number;
  readonly clientCores: number;
  /** The busiest client process, in cores: near 1.0 means the clients were the bottleneck. */
  readonly busiestClientProcessCores: number;
  /** Cores the whole machine was busy, and how much of that was neither servers nor clients. */
  readonly machineBusyCores: number;
  readonly otherProcessesCores: number;
  /** Differences of the server counters over the window. */
  readonly counters: Record<string, number>;
  /**
   * The warm-up before the window, reported and not judged: a server process's first seconds
   * run code V8 has not optimized yet (docs/BENCHMARK-LOG.md, "Warm-up").
   */
  readonly warmup: {
    readonly seconds: number;
    readonly completed: number;
    readonly perSecond: number;
    readonly latency: LatencySummary;
  };
}

class Worker {
  private readonly waiting: ((message: WorkerMessage) => void)[] = [];
  private readonly inbox: WorkerMessage[] = [];

  constructor(readonly child: ChildProcess) {
    child.on("message", (message: WorkerMessage) => {
      const waiter = this.waiting.shift();
      if (waiter === undefined) this.inbox.push(message);
      else waiter(message);
    });
  }

  send(message: ParentMessage): void {
    this.child.send(message);
  }

  next(timeoutMs: number): Promise<WorkerMessage> {
    const queued = this.inbox.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`client process ${this.child.pid} did not answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.child.once("exit", (code) => reject(new Error(`client process exited (${code})`)));
      this.waiting.push((message) => {
        clearTimeout(timer);
        resolve(message);
      });
    });
  }

  async expect<T extends WorkerMessage["type"]>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<WorkerMessage, { type: T }>> {
    const message = await this.next(timeoutMs);
    if (message.type === "failed") throw new Error(`client process failed: ${message.error}`);
    if (message.type !== type) throw new Error(`client process sent ${message.type}, expected ${type}`);
    return message as Extract<WorkerMessage, { type: T }>;
  }
}

export async function runLoad(children: Children, options: LoadOptions): Promise<LoadResult> {
  const processes = Math.min(options.clientProcesses, options.clients);
  const workers: Worker[] = [];
  try {
    for (let p = 0; p < processes; p++) {
      const child = children.spawn(
        `client process ${p}`,
        process.execPath,
        ["--import", "tsx", workerScript],
        { stdio: ["ignore", 2, 2, "ipc"] },
      );
      workers.push(new Worker(child));
    }
    workers.forEach((worker, p) => {
      const clients = Math.floor(options.clients / processes) + (p < options.clients % processes ? 1 : 0);
      worker.send({
        type: "start",
        target: options.target,
        clients,
        connections: Math.min(options.connectionsPerProcess, clients),
        keys: options.keys,
        operation: options.operation,
        seed: p + 1,
        thinkMs: options.thinkMs ?? 0,
      });
    });
    await Promise.all(workers.map((w) => w.expect("ready", 60_000)));
    for (const w of workers) w.send({ type: "go" });
    await sleep(options.warmupSeconds * 1000);

    const clientPids = workers.map((w) => w.child.pid as number);
    const serverPids = options.serverPids();
    const counters0 = (await options.counters?.()) ?? {};
    const serverCpu0 = cpuUsOf(serverPids);
    const serverMainCpu0 = mainThreadCpuUsOf(serverPids);
    const machine0 = machineBusyUs();
    const clientCpu0 = clientPids.map((pid) => cpuUsOf([pid]));
    const started = performance.now();
    for (const w of workers) w.send({ type: "measure" });
    await sleep(options.seconds * 1000);
    const results = workers.map((w) => w.expect("result", 30_000));
    for (const w of workers) w.send({ type: "stop" });
    const wallUs = (performance.now() - started) * 1000;
    const serverCpuUs = cpuUsOf(serverPids) - serverCpu0;
    const serverMainCpuUs = mainThreadCpuUsOf(serverPids) - serverMainCpu0;
    const machineUs = machineBusyUs() - machine0;
    const clientCpuUs = clientPids.map((pid, i) => cpuUsOf([pid]) - (clientCpu0[i] as number));
    const finished: WorkerResult[] = await Promise.all(results);
    const counters1 = (await options.counters?.()) ?? {};
    const counters: Record<string, number> = {};
    for (const [name, value] of Object.entries(counters1)) counters[name] = value - (counters0[name] ?? 0);

    const completed = finished.reduce((sum, r) => sum + r.completed, 0);
    const windowSeconds = Math.max(...finished.map((r) => r.windowMs)) / 1000;
    const latencies: number[] = [];
    for (const r of finished) for (const us of r.latenciesUs) latencies.push(us);
    const clientTotalUs = clientCpuUs.reduce((a, b) => a + b, 0);
    const warmupLatencies: number[] = [];
    for (const r of finished) for (const us of r.warmup.latenciesUs) warmupLatencies.push(us);
    const warmupSeconds = Math.max(...finished.map((r) => r.warmup.windowMs)) / 1000;
    return {
      operation: options.operation,
      clients: options.clients,
      clientProcesses: processes,
      windowSeconds: round(windowSeconds, 2),
      completed,
      perSecond: Math.round(completed / windowSeconds),
      errors: finished.reduce((sum, r) => sum + r.errors, 0),
      firstError: finished.find((r) => r.firstError !== null)?.firstError ?? null,
      latency: summarizeLatencies(latencies),
      serverCpuUsPerOperation: round(serverCpuUs / Math.max(1, completed)),
      serverMainThreadCpuUsPerOperation: round(serverMainCpuUs / Math.max(1, completed)),
      clientCpuUsPerOperation: round(clientTotalUs / Math.max(1, completed)),
      serverCores: round(serverCpuUs / wallUs, 2),
      clientCores: round(clientTotalUs / wallUs, 2),
      busiestClientProcessCores: round(Math.max(...clientCpuUs) / wallUs, 2),
      machineBusyCores: round(machineUs / wallUs, 2),
      otherProcessesCores: round((machineUs - serverCpuUs - clientTotalUs) / wallUs, 2),
      counters,
      warmup: {
        seconds: round(warmupSeconds, 2),
        completed: warmupLatencies.length,
        perSecond: Math.round(warmupLatencies.length / Math.max(warmupSeconds, 1e-3)),
        latency: summarizeLatencies(warmupLatencies),
      },
    };
  } finally {
    await Promise.all(workers.map((w) => children.kill(w.child, "SIGTERM", 3000)));
  }
}

export function describeLoad(label: string, r: LoadResult): string {
  return (
    `${label}: ${r.perSecond.toLocaleString("en-US")} ${r.operation}s/s (${r.completed} in ${r.windowSeconds} s, ` +
    `${r.clients} clients in ${r.clientProcesses} client process(es), ${r.errors} errors); ` +
    `latency p50 ${r.latency.p50Ms} ms, p99 ${r.latency.p99Ms} ms, p99.9 ${r.latency.p999Ms} ms, max ${r.latency.maxMs} ms; ` +
    `server CPU ${r.serverCpuUsPerOperation} us/op (${r.serverCores} cores; ${r.serverMainThreadCpuUsPerOperation} us/op in their main threads), ` +
    `client CPU ${r.clientCpuUsPerOperation} us/op (${r.clientCores} cores, busiest client process ${r.busiestClientProcessCores}); ` +
    `machine busy ${r.machineBusyCores} of ${cores} cores (${r.otherProcessesCores} by other processes); ` +
    `before the window, ${r.warmup.seconds} s of warm-up (not judged): ${r.warmup.perSecond.toLocaleString("en-US")} ${r.operation}s/s, ` +
    `latency p50 ${r.warmup.latency.p50Ms} ms, p99 ${r.warmup.latency.p99Ms} ms` +
    (r.firstError === null ? "" : `; first error: ${r.firstError}`)
  );
}
