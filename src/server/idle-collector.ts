/**
 * Returns the memory of a burst once the server is quiet again.
 *
 * V8 collects its old generation when allocation needs room. After a burst (cells created in
 * bulk, nodes loaded by a flood of requests) a server that goes quiet allocates almost nothing,
 * so the garbage of the burst, and the heap grown to hold it, stay in the process indefinitely:
 * measured, a server left with 1,000,000 resident nodes held twice their live heap. The collector
 * watches a counter of the server's work and its used heap; when the counter has stood still for
 * `quietMs` and either the heap has grown by more than `growthBytes` plus half of what the last
 * collection left, or at least `releasedMin` nodes were evicted since (their memory is garbage
 * the heap figure still counts), it asks for one full collection. The server's Node.js flags
 * (`serverNodeFlags`) expose V8's collector; the process's collection
 * (`src/cli/process-collector.ts`) compacts, so the pages the burst left half empty are given
 * back too.
 *
 * A compacting collection of a large heap pauses the event loop (measured here: 0.27 s with
 * 300,000 resident nodes, 1.46 s with 1,000,000); it runs only on a quiet server, and at most
 * once per growth of the heap or batch of evictions.
 */
export interface IdleCollectorOptions {
  /** Start a full collection; the collector waits for the promise, if one is returned. */
  readonly collect: () => Promise<unknown> | undefined;
  /** Bytes of heap in use now (live objects and garbage not yet collected). */
  readonly heapUsedBytes: () => number;
  /** How long the work counter must stand still before a collection. */
  readonly quietMs: number;
  /** Growth beyond half of what the last collection left that makes a collection worthwhile. */
  readonly growthBytes: number;
  /** Nodes evicted since the last collection that make a collection worthwhile. */
  readonly releasedMin: number;
}

export class IdleCollector {
  private readonly options: IdleCollectorOptions;
  private lastWork = -1;
  private quietSinceMs = 0;
  private collecting = false;
  /** Heap in use after the last collection (or at start). */
  private baselineBytes: number;
  /** The released count when the last collection started. */
  private releasedAtCollection = 0;
  collections = 0;

  constructor(options: IdleCollectorOptions) {
    this.options = options;
    this.baselineBytes = options.heapUsedBytes();
  }

  /** The heap use above which a quiet server collects. */
  get thresholdBytes(): number {
    return this.baselineBytes * 1.5 + this.options.growthBytes;
  }

  /**
   * Called periodically with a counter that moves whenever the server works (turns, evictions)
   * and a count of nodes evicted (since start). Returns whether it started a collection.
   */
  observe(nowMs: number, work: number, released: number): boolean {
    if (work !== this.lastWork) {
      this.lastWork = work;
      this.quietSinceMs = nowMs;
      return false;
    }
    if (this.collecting || nowMs - this.quietSinceMs < this.options.quietMs) return false;
    const releasedEnough = released - this.releasedAtCollection >= this.options.releasedMin;
    if (!releasedEnough && this.options.heapUsedBytes() < this.thresholdBytes) return false;
    this.releasedAtCollection = released;
    this.collecting = true;
    this.collections += 1;
    const finish = () => {
      this.collecting = false;
      this.baselineBytes = this.options.heapUsedBytes();
    };
    let pending: Promise<unknown> | undefined;
    try {
      pending = this.options.collect();
    } catch {
      pending = undefined;
    }
    if (pending === undefined) finish();
    else pending.then(finish, finish);
    return true;
  }
}
