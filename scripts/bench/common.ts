/**
 * What every benchmark of `npm run bench` shares: options, the machine's floors, percentiles,
 * the child processes it started (stopped by pid at the end, on error and on SIGINT), and
 * readings of a process's CPU and memory from /proc.
 */
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import {
  closeSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- options

export class UsageError extends Error {
  override name = "UsageError";
}

/** `--name value` options and `--flag` switches after the benchmark's name. */
export class Options {
  private readonly values = new Map<string, string>();
  private readonly switches = new Set<string>();
  private readonly used = new Set<string>();

  constructor(args: readonly string[], switchNames: readonly string[]) {
    for (let i = 0; i < args.length; i++) {
      const arg = args[i] as string;
      if (!arg.startsWith("--")) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
      const equals = arg.indexOf("=");
      if (equals > 2) {
        // `--name=value`: the way to pass a value that itself starts with `--`.
        const name = arg.slice(2, equals);
        if (switchNames.includes(name)) throw new UsageError(`--${name} takes no value`);
        this.values.set(name, arg.slice(equals + 1));
        continue;
      }
      const name = arg.slice(2);
      if (switchNames.includes(name)) {
        this.switches.add(name);
        continue;
      }
      const value = args[i + 1];
      if (value === undefined || value.startsWith("--"))
        throw new UsageError(
          `--${name} needs a value (for example --${name} 10, or --${name}=VALUE for one starting with --)`,
        );
      this.values.set(name, value);
      i += 1;
    }
  }

  flag(name: string): boolean {
    this.used.add(name);
    return this.switches.has(name);
  }

  /** A number option; `min` bounds it from below. */
  number(name: string, fallback: number, min = 1): number {
    this.used.add(name);
    const text = this.values.get(name);
    if (text === undefined) return fallback;
    const value = Number(text.replace(/_/g, ""));
    if (!Number.isFinite(value) || value < min)
      throw new UsageError(`--${name} must be a number >= ${min}, not ${JSON.stringify(text)}`);
    return value;
  }

  text(name: string): string | undefined {
    this.used.add(name);
    return this.values.get(name);
  }

  integer(name: string, fallback: number, min = 1): number {
    const value = this.number(name, fallback, min);
    if (!Number.isSafeInteger(value)) throw new UsageError(`--${name} must be an integer, not ${value}`);
    return value;
  }

  /** Called once every option is read: an option no part of the benchmark reads is a typo, not a silent default. */
  finish(): void {
    const unknown = [...this.values.keys(), ...this.switches].filter((name) => !this.used.has(name));
    if (unknown.length > 0)
      throw new UsageError(`this benchmark has no option ${unknown.map((name) => `--${name}`).join(", ")}`);
  }
}

// ---------------------------------------------------------------- floors

export interface Floors {
  /** Median latency of fsync after a small write, on the disk of the benchmark's data directories. */
  readonly fsyncUs: number;
  /** Its 99th percentile: what a p99 target has to live with. */
  readonly fsyncP99Us: number;
  /** Median round trip of one byte over TCP on 127.0.0.1. */
  readonly loopbackRttUs: number;
  /** Its 99th percentile. */
  readonly loopbackRttP99Us: number;
}

/** Sorted fsync latencies (us) of small writes in `dir`. */
function fsyncSamplesUs(dir: string): Float64Array {
  const file = join(dir, "fsync-probe");
  const fd = openSync(file, "w");
  const samples: number[] = [];
  try {
    for (let i = 0; i < 500; i++) {
      writeSync(fd, `probe ${i}\n`);
      const started = process.hrtime.bigint();
      fsyncSync(fd);
      samples.push(Number(process.hrtime.bigint() - started) / 1000);
    }
  } finally {
    closeSync(fd);
    unlinkSync(file);
  }
  return sorted(samples);
}

/** Sorted round trips (us) of one byte over TCP on 127.0.0.1, after 100 of warm-up. */
async function loopbackSamplesUs(): Promise<Float64Array> {
  const server = createServer((socket) => socket.on("data", (data) => socket.write(data)));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const socket = connect(port, "127.0.0.1");
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    socket.setNoDelay(true);
    const samples: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const started = process.hrtime.bigint();
      await new Promise<void>((resolve) => {
        socket.once("data", () => resolve());
        socket.write("p");
      });
      if (i >= 100) samples.push(Number(process.hrtime.bigint() - started) / 1000);
    }
    return sorted(samples);
  } finally {
    socket.destroy();
    server.close();
  }
}

export async function measureFloors(dataDir: string): Promise<Floors> {
  const fsync = fsyncSamplesUs(dataDir);
  const loopback = await loopbackSamplesUs();
  return {
    fsyncUs: Math.round(percentile(fsync, 0.5)),
    fsyncP99Us: Math.round(percentile(fsync, 0.99)),
    loopbackRttUs: Math.round(percentile(loopback, 0.5)),
    loopbackRttP99Us: Math.round(percentile(loopback, 0.99)),
  };
}

/** The line every benchmark prints first: medians, with the 99th percentiles in parentheses. */
export function floorsLine(floors: Floors): string {
  return (
    `machine floors: fsync ${floors.fsyncUs} us (p99 ${floors.fsyncP99Us}), ` +
    `loopback round trip ${floors.loopbackRttUs} us (p99 ${floors.loopbackRttP99Us})`
  );
}

// ---------------------------------------------------------------- percentiles

export function sorted(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values).sort();
}

/** The value at quantile q of sorted samples (nearest rank, as HDR histograms report). */
export function percentile(sortedValues: ArrayLike<number>, q: number): number {
  if (sortedValues.length === 0) return Number.NaN;
  const rank = Math.ceil(q * sortedValues.length);
  return sortedValues[Math.min(sortedValues.length - 1, Math.max(0, rank - 1))] as number;
}

export interface LatencySummary {
  readonly samples: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
}

/** Percentiles of latencies given in microseconds, reported in milliseconds. */
export function summarizeLatencies(latenciesUs: ArrayLike<number>): LatencySummary {
  const s = sorted(latenciesUs);
  const ms = (us: number) => Math.round(us) / 1000;
  return {
    samples: s.length,
    p50Ms: ms(percentile(s, 0.5)),
    p90Ms: ms(percentile(s, 0.9)),
    p99Ms: ms(percentile(s, 0.99)),
    p999Ms: ms(percentile(s, 0.999)),
    maxMs: ms(s.length === 0 ? Number.NaN : (s[s.length - 1] as number)),
  };
}

export function round(value: number, digits = 1): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

// ---------------------------------------------------------------- /proc readings

const clockTicksPerSecond = 100;
const pageBytes = 4096;

/** A file of /proc/<pid>/, or null once the process is gone. */
function readProcess(pid: number, file: string): string | null {
  try {
    return readFileSync(`/proc/${pid}/${file}`, "utf8");
  } catch {
    return null;
  }
}

/**
 * CPU time (user + system) and resident memory of a live process, from /proc/<pid>/stat, or of
 * one of its threads from `task/<tid>/stat` (the same fields).
 */
export function processStat(pid: number, file = "stat"): { cpuUs: number; rssBytes: number } | null {
  const text = readProcess(pid, file);
  if (text === null) return null;
  // Fields after the command name (which may hold spaces) start at field 3 (state).
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const rssPages = Number(fields[21]);
  return { cpuUs: ((utime + stime) * 1e6) / clockTicksPerSecond, rssBytes: rssPages * pageBytes };
}

/**
 * A live process's resident memory split by kind, from /proc/<pid>/status: anonymous (heap,
 * stacks, malloc: the process's own memory) and file-backed (mapped files, here lmdb's data file:
 * page cache the kernel may reclaim, shared with every process that maps the file).
 */
export function residentMemory(pid: number): { anonBytes: number; fileBytes: number } | null {
  const text = readProcess(pid, "status");
  if (text === null) return null;
  const kib = (field: string): number =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
  return { anonBytes: kib("RssAnon"), fileBytes: kib("RssFile") + kib("RssShmem") };
}

/** CPU time the whole machine spent busy (all processes, all cores), from /proc/stat. */
export function machineBusyUs(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
  const busy = ticks.reduce((sum, t, i) => (i === 3 || i === 4 ? sum : sum + t), 0);
  return (busy * 1e6) / clockTicksPerSecond;
}

export function cpuUsOf(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + (processStat(pid)?.cpuUs ?? 0), 0);
}

/** CPU time of the processes' main threads only (the thread whose id is the process's). */
export function mainThreadCpuUsOf(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + (processStat(pid, `task/${pid}/stat`)?.cpuUs ?? 0), 0);
}

// ---------------------------------------------------------------- child processes

/**
 * Every process a benchmark starts, so that all of them are stopped by pid at the end, when a
 * benchmark fails, and on SIGINT/SIGTERM.
 */
export class Children {
  private readonly live = new Map<number, { child: ChildProcess; name: string }>();
  private readonly tempDirs: string[] = [];

  spawn(name: string, command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
    const child = spawn(command, args, options);
    if (child.pid === undefined) throw new Error(`could not start ${name}: ${command} ${args.join(" ")}`);
    const pid = child.pid;
    this.live.set(pid, { child, name });
    child.once("exit", () => this.live.delete(pid));
    return child;
  }

  /** A temporary directory removed with the children. */
  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    this.tempDirs.push(dir);
    return dir;
  }

  /** kill -9 one child by pid; resolves when it has exited. */
  async kill(child: ChildProcess, signal: NodeJS.Signals = "SIGKILL", graceMs = 5000): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    process.kill(child.pid, signal);
    if (signal === "SIGKILL") return exited;
    const timer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid as number, "SIGKILL");
    }, graceMs);
    await exited;
    clearTimeout(timer);
  }

  /** Stops every child still running (SIGTERM, then SIGKILL after a grace period). */
  async stopAll(graceMs = 3000): Promise<void> {
    await Promise.all([...this.live.values()].map(({ child }) => this.kill(child, "SIGTERM", graceMs)));
  }

  /** Synchronous last resort (signal handlers, exit): SIGKILL to every child by pid, temp dirs removed. */
  killAllNow(): void {
    for (const pid of this.live.keys()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    this.live.clear();
    this.removeTempDirs();
  }

  removeTempDirs(): void {
    for (const dir of this.tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- network helpers

/** Ports free right now on 127.0.0.1 (shared with the tests that run colonies). */
export { freePorts } from "../../test/support/colony.ts";

/** Polls `probe` until it returns true; returns the milliseconds it took. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 20,
): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    try {
      if (await probe()) return performance.now() - started;
    } catch {
      // not yet
    }
    await sleep(intervalMs);
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms`);
}

/** Progress for a person watching (stderr, so that --json output stays one object). */
/**
 * Runs `script` (a TypeScript file run through tsx) in a child process with the server's Node.js
 * flags, its options as one JSON argument, and returns the JSON object it prints on its last line.
 */
export async function runJsonScript<T>(
  children: Children,
  name: string,
  script: string,
  nodeFlags: readonly string[],
  options: unknown,
): Promise<T> {
  const child = children.spawn(
    name,
    process.execPath,
    [...nodeFlags, "--import", "tsx", script, JSON.stringify(options)],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  let output = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  // "close": the process has exited and its output has been read to the end.
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  const line = output.trim().split("\n").pop() ?? "";
  if (code !== 0 || !line.startsWith("{"))
    throw new Error(`the ${name} exited with ${code} without its result: ${output.slice(-500)}`);
  return JSON.parse(line) as T;
}

export function progress(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

// ---------------------------------------------------------------- reports

export interface Target {
  /** What is required, in words: "p50 <= 1 ms". */
  readonly target: string;
  readonly measured: number | string;
  readonly met: boolean;
}

export interface BenchmarkReport {
  readonly results: Record<string, unknown>;
  readonly targets: Record<string, Target>;
  /** The results for a person, one line each. */
  readonly lines: readonly string[];
}

/**
 * Two systems' figures side by side, one line per figure, with the ratio of the first to the
 * second: the table the etcd and floor benchmarks print.
 */
export function sideBySide(
  names: readonly [string, string],
  rows: readonly { readonly figure: string; readonly a: number; readonly b: number }[],
): string[] {
  const width = Math.max(6, ...rows.map((r) => r.figure.length));
  return [
    `${"figure".padEnd(width)}  ${names[0].padStart(10)}  ${names[1].padStart(10)}  ${names[0]}/${names[1]}`,
    ...rows.map(
      (r) =>
        `${r.figure.padEnd(width)}  ${String(r.a).padStart(10)}  ${String(r.b).padStart(10)}  ${round(r.a / r.b, 2)}`,
    ),
  ];
}
