/**
 * Where a checkpoint runs (lmdb.ts): on the storage's own thread, or on a worker thread of its
 * own so that the event loop goes on while lmdb takes the journal's records. Either way one
 * checkpoint runs at a time, in the order they were started, and the storage can wait for the
 * one in flight synchronously when a read needs lmdb whole.
 *
 * The worker protocol: the storage posts {type: "checkpoint", id, changes, throughSeq, forget} on
 * a message port (the changes are one buffer, encodePendingChanges' bytes, transferred rather
 * than copied); the worker applies them in one lmdb
 * transaction, posts {id, result} and then bumps a shared counter and wakes whoever waits on it,
 * so that waitIdle() can block on the counter and take the reply with receiveMessageOnPort. The
 * worker's thread also marks the counter's neighbour and wakes the waiter when it ends, for
 * whatever reason (a module that fails to load, a crash): a blocked wait cannot hear the worker's
 * exit event, and learns this way that no answer will come. A worker alive but silent for
 * workerAnswerMsMax after a job started (hung) fails that job, and the storage, even when nothing
 * waits for it: a timer armed with each job.
 * {type: "close"} closes the worker's handle on the environment and is answered {type: "closed"}.
 *
 * A quiet server's idle collection replaces the worker (collectGarbage): the old one closes its
 * environment and ends, and the next checkpoint starts a new one. A load's checkpoints leave about
 * 145 MiB with a worker, in its heap and its lmdb environment, that neither a collection of its
 * heap nor the C allocator's settings gave back; ending the thread does (docs/BENCHMARK-LOG.md).
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from "node:worker_threads";
import { assert, type CellKey } from "../core/index.ts";

/** What one checkpoint did to lmdb. */
export interface CheckpointOutcome {
  readonly recordsWritten: number;
  readonly recordsDeleted: number;
  readonly bytesWritten: number;
  readonly transactionId: number;
  /** Cells left as they were because their stored node record failed its checksum. */
  readonly skippedCells: readonly CellKey[];
}

export type CheckpointResult =
  | { readonly ok: true; readonly outcome: CheckpointOutcome; readonly tookMs: number }
  | { readonly ok: false; readonly error: string };

export interface CheckpointJob {
  /** The pending changes of the cells to bring up to date (encodePendingChanges). */
  readonly changes: Uint8Array;
  /** The last journal record they cover: lmdb records it in the same transaction. */
  readonly throughSeq: number;
  /** Cells whose node records were written by someone else since the last job (tests only). */
  readonly forget: readonly CellKey[];
}

export interface CheckpointRunner {
  /** Starts the job; `done` runs later, in a turn of its own or inside waitIdle(). One at a time. */
  start(job: CheckpointJob, done: (result: CheckpointResult) => void): void;
  /** Whether a job is in flight. */
  readonly busy: boolean;
  /** Blocks until the job in flight, if any, is done; its `done` has run when this returns. */
  waitIdle(): void;
  /** Runs the job and returns its result; nothing may be in flight. */
  runNow(job: CheckpointJob): CheckpointResult;
  /** Waits for the job in flight, then lets go of the thread. */
  close(): Promise<void>;
  /**
   * A quiet moment: gives back what the checkpoint thread holds, if it has its own (the worker is
   * replaced when no job is in flight). Checkpoints go on as before.
   */
  collectGarbage(): void;
}

/** Applies a job to lmdb, on the calling thread (LmdbApplier.applyJob). */
export type ApplyJob = (job: CheckpointJob) => CheckpointOutcome;

/** Runs a job with `apply`, timing it; a failure is a result, not a throw. */
export function runJob(apply: ApplyJob, job: CheckpointJob): CheckpointResult {
  const startedMs = performance.now();
  try {
    const outcome = apply(job);
    return { ok: true, outcome, tookMs: performance.now() - startedMs };
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

/** Checkpoints on the storage's own thread, in a turn of their own: the event loop waits for them. */
export class CallerRunner implements CheckpointRunner {
  private pending: { readonly immediate: NodeJS.Immediate; readonly run: () => void } | null = null;

  constructor(private readonly apply: ApplyJob) {}

  get busy(): boolean {
    return this.pending !== null;
  }

  start(job: CheckpointJob, done: (result: CheckpointResult) => void): void {
    assert(this.pending === null, "one checkpoint at a time");
    const run = (): void => {
      this.pending = null;
      done(runJob(this.apply, job));
    };
    this.pending = { immediate: setImmediate(run), run };
  }

  waitIdle(): void {
    const pending = this.pending;
    if (pending === null) return;
    clearImmediate(pending.immediate);
    pending.run();
  }

  runNow(job: CheckpointJob): CheckpointResult {
    assert(this.pending === null, "one checkpoint at a time");
    return runJob(this.apply, job);
  }

  async close(): Promise<void> {
    this.waitIdle();
  }

  collectGarbage(): void {
    // The storage's thread is the caller's: its collection is the caller's to ask for.
  }
}

/** Replies the worker posts. */
export type WorkerReply =
  | { readonly type: "result"; readonly id: number; readonly result: CheckpointResult }
  | { readonly type: "closed" };

/** Requests the storage posts. */
export type WorkerRequest =
  | ({ readonly type: "checkpoint"; readonly id: number } & CheckpointJob)
  | { readonly type: "close" };

/** What the worker is started with (workerData). */
export interface WorkerStart {
  readonly path: string;
  readonly port: MessagePort;
  /** Bumped after each reply is posted. */
  readonly signal: Int32Array;
}

/**
 * The worker's script: it notes its thread's end in `workerData.signal` (word 1, then wakes the
 * waiter on word 0), then loads `entry`, directly or, for a TypeScript module (the sources run
 * through tsx), through tsx's API (a worker does not take its parent's module hooks).
 */
function workerScript(entry: URL): string {
  let load = `import(${JSON.stringify(entry.href)})`;
  if (entry.pathname.endsWith(".ts")) {
    // The ES module build of tsx's API, as its package's exports name it for `import`.
    const packageJson = createRequire(import.meta.url).resolve("tsx/package.json");
    const exported = JSON.parse(readFileSync(packageJson, "utf8")).exports["./esm/api"].import.default;
    const api = pathToFileURL(join(dirname(packageJson), exported)).href;
    load =
      `import(${JSON.stringify(api)})` +
      `.then(({ tsImport }) => tsImport(${JSON.stringify(entry.href)}, ${JSON.stringify(entry.href)}))`;
  }
  return (
    'const { workerData } = require("node:worker_threads");\n' +
    'process.on("exit", () => { const s = workerData.signal; Atomics.store(s, 1, 1); Atomics.add(s, 0, 1); Atomics.notify(s, 0); });\n' +
    `${load};\n`
  );
}

/**
 * How long a checkpoint may go unanswered before the worker is given up on: a blocked waitIdle()
 * stops waiting then, and so does the storage when nothing waits (a timer armed with each job).
 * A checkpoint is bounded by the policy's journal and cell bounds (well under a second here); a
 * worker this late is hung (a loop, a lock), and the storage fails rather than wait on.
 */
const workerAnswerMsMax = 120_000;

/** One worker thread and the port the storage talks to it on. */
interface WorkerThread {
  readonly worker: Worker;
  readonly port: MessagePort;
  /** Word 0 counts the worker's replies; word 1 is set when its thread has ended. */
  readonly signal: Int32Array;
  /** Set while the worker is asked to close: called when it answers. */
  closing: (() => void) | null;
}

/**
 * Checkpoints on a worker thread started from `entry`, a module that calls serveCheckpoints()
 * (checkpoint-worker.ts) with the storage's command codec. The worker opens the same lmdb
 * environment; it is started with the first job and is the only one to write the environment
 * while it runs.
 */
export class WorkerRunner implements CheckpointRunner {
  private current: WorkerThread | null = null;
  /** Workers replaced by collectGarbage that have not ended yet. */
  private readonly retiring = new Set<Promise<void>>();
  private inFlight: {
    readonly id: number;
    /** When the job was started (performance.now()): its bound runs from here. */
    readonly startedMs: number;
    readonly done: (result: CheckpointResult) => void;
  } | null = null;
  private nextId = 1;
  /** Why the worker stopped, if it did: every later job fails with it. */
  private failure: string | null = null;
  /** Fails the job in flight if it is still unanswered answerMsMax after it started. */
  private overdue: NodeJS.Timeout | null = null;

  constructor(
    private readonly path: string,
    private readonly entry: URL,
    /** workerAnswerMsMax, or less in tests. */
    private readonly answerMsMax = workerAnswerMsMax,
  ) {}

  get busy(): boolean {
    return this.inFlight !== null;
  }

  start(job: CheckpointJob, done: (result: CheckpointResult) => void): void {
    assert(this.inFlight === null, "one checkpoint at a time");
    const id = this.nextId++;
    this.inFlight = { id, startedMs: performance.now(), done };
    if (this.failure !== null) {
      const error = this.failure;
      queueMicrotask(() => this.take({ type: "result", id, result: { ok: false, error } }));
      return;
    }
    const request: WorkerRequest = { type: "checkpoint", id, ...job };
    // The changes are a buffer of their own (encodePendingChanges): moved, not copied.
    const thread = this.ensure();
    thread.port.postMessage(request, [job.changes.buffer as ArrayBuffer]);
    // A worker that hangs is noticed even when nothing waits for it: the storage fails, and the
    // thread is let go (a hung one may never end; it holds nothing the storage still needs).
    this.overdue = setTimeout(() => {
      this.overdue = null;
      if (this.inFlight?.id !== id) return;
      this.fail(this.lateReason());
      if (this.current === thread) this.current = null;
      void thread.worker.terminate();
    }, this.answerMsMax);
    this.overdue.unref();
  }

  private lateReason(): string {
    return `the checkpoint worker did not answer within ${this.answerMsMax / 1000} s`;
  }

  waitIdle(): void {
    while (this.inFlight !== null) {
      // The same bound as the job's timer: from when the job started, not from this wait.
      const deadline = this.inFlight.startedMs + this.answerMsMax;
      const thread = this.current;
      // Read the counter first: a reply posted after this read bumps it, so the wait below
      // returns at once instead of missing the wake-up.
      const seen = thread === null ? 0 : Atomics.load(thread.signal, 0);
      const reply = thread === null ? undefined : receiveMessageOnPort(thread.port);
      if (reply !== undefined) {
        this.take(reply.message as WorkerReply);
        continue;
      }
      // Every reply the worker posted was taken above: one that has ended will not answer.
      if (thread !== null && Atomics.load(thread.signal, 1) !== 0 && this.failure === null)
        this.failure = "the checkpoint worker's thread ended before it answered";
      if (this.failure !== null || performance.now() > deadline || thread === null) {
        this.fail(this.failure ?? this.lateReason());
        return;
      }
      Atomics.wait(thread.signal, 0, seen, Math.max(1, Math.min(1000, deadline - performance.now())));
    }
  }

  runNow(job: CheckpointJob): CheckpointResult {
    let result: CheckpointResult | null = null;
    this.start(job, (r) => {
      result = r;
    });
    this.waitIdle();
    assert(result !== null, "a checkpoint waited for has its result");
    return result;
  }

  async close(): Promise<void> {
    this.waitIdle();
    const thread = this.current;
    this.current = null;
    if (thread !== null) await this.end(thread, this.failure === null);
    await Promise.all(this.retiring);
  }

  collectGarbage(): void {
    const thread = this.current;
    if (thread === null || this.failure !== null || this.inFlight !== null) return;
    // The next checkpoint starts a new worker; this one closes its environment and ends.
    this.current = null;
    const ended = this.end(thread, true);
    this.retiring.add(ended);
    void ended.finally(() => this.retiring.delete(ended));
  }

  /** Asks `thread` to close its environment (when `ask`), then ends it. */
  private async end(thread: WorkerThread, ask: boolean): Promise<void> {
    if (ask) {
      await new Promise<void>((resolve) => {
        thread.closing = resolve;
        thread.port.ref();
        thread.port.postMessage({ type: "close" } satisfies WorkerRequest);
      });
    }
    thread.port.close();
    await thread.worker.terminate();
  }

  private ensure(): WorkerThread {
    if (this.current !== null) return this.current;
    const { port1, port2 } = new MessageChannel();
    const signal = new Int32Array(new SharedArrayBuffer(8));
    const start: WorkerStart = { path: this.path, port: port2, signal };
    const worker = new Worker(workerScript(this.entry), {
      eval: true,
      workerData: start,
      transferList: [port2],
    });
    const thread: WorkerThread = { worker, port: port1, signal, closing: null };
    // Only the worker in use fails the storage; one asked to close (or replaced) may end as it does.
    worker.on("error", (error) => {
      if (thread.closing === null && this.current === thread)
        this.fail(`the checkpoint worker failed: ${error.message}`);
    });
    worker.on("exit", (code) => {
      // A worker that ends while asked to close will not answer: its closing is over.
      if (thread.closing !== null) thread.closing();
      else if (this.current === thread) this.fail(`the checkpoint worker exited (code ${code})`);
    });
    worker.unref();
    port1.on("message", (reply: WorkerReply) => {
      if (reply.type === "closed") thread.closing?.();
      else this.take(reply);
    });
    port1.unref();
    this.current = thread;
    return thread;
  }

  private fail(reason: string): void {
    if (this.failure === null) this.failure = reason;
    const inFlight = this.inFlight;
    if (inFlight === null) return;
    this.settle();
    inFlight.done({ ok: false, error: this.failure });
  }

  private take(reply: WorkerReply): void {
    if (reply.type === "closed") return;
    const inFlight = this.inFlight;
    if (inFlight === null || inFlight.id !== reply.id) return;
    this.settle();
    inFlight.done(reply.result);
  }

  /** The job in flight is over (answered or failed): nothing is in flight, no timer armed. */
  private settle(): void {
    this.inFlight = null;
    if (this.overdue !== null) clearTimeout(this.overdue);
    this.overdue = null;
  }
}
