/**
 * The server process's idle collection: one IdleCollector per process asks, once every server in
 * it is quiet, for a full collection of V8's heap, exposed by the server's Node flags
 * (`serverNodeFlags`: `--expose-gc`), then has its servers' idle checkpoint workers replaced
 * (ending a worker gives back what a burst's checkpoints left in it). Its wall time and longest
 * pause (of the process's own heap) are kept for /metrics.
 *
 * The collection compacts. Long-lived nodes and a burst's short-lived records are promoted
 * together, and a plain collection leaves the pages they shared half empty and still reserved
 * (measured with 1,000,000 resident nodes: 512 MiB of live heap in 1,113 MiB reserved; compacted,
 * 648 MiB). V8 compacts few pages by its own heuristics; `--compact-on-every-full-gc` makes it
 * evacuate every fragmented page. It is set for this collection only: V8 reads it when the
 * collection starts, and a busy server's own full collections keep V8's shorter pauses.
 */
import { PerformanceObserver } from "node:perf_hooks";
import { getHeapStatistics, setFlagsFromString } from "node:v8";
import { IdleCollector, type Server } from "../server/index.ts";

/** How often the process looks whether it is quiet enough to give back a burst's memory. */
const idleCheckMs = 1000;
/** How long after an idle collection its pauses are still reported. */
const pauseObserveMs = 2000;

/**
 * One collector for the process (`physalia up` may run several servers in one): it collects
 * only when every server in the process is quiet. Null when V8's collector is not exposed.
 */
export const processCollector = (() => {
  const gc = (globalThis as { gc?: (options?: object) => unknown }).gc;
  if (typeof gc !== "function") return null;
  const sources = new Set<Server>();
  /** What else a collection gives back (the servers' checkpoint workers, replaced). */
  const others = new Set<() => void>();
  let lastCollectionMs = 0;
  let lastPauseMs = 0;
  /** One compacting full collection; settles when it is over. */
  const collect = (): Promise<unknown> => {
    const started = performance.now();
    lastPauseMs = 0;
    // V8 reports each pause of the collection (its incremental steps run between them), a
    // moment after it ends: the observer stays a while after the collection.
    const pauses = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        if (entry.startTime >= started) lastPauseMs = Math.max(lastPauseMs, entry.duration);
      }
    });
    pauses.observe({ entryTypes: ["gc"] });
    setFlagsFromString("--compact-on-every-full-gc");
    return Promise.resolve()
      .then(() => gc({ type: "major", execution: "async" }))
      .then(() => {
        for (const other of others) other();
      })
      .finally(() => {
        setFlagsFromString("--no-compact-on-every-full-gc");
        lastCollectionMs = performance.now() - started;
        setTimeout(() => pauses.disconnect(), pauseObserveMs).unref();
      });
  };
  const collector = new IdleCollector({
    collect,
    heapUsedBytes: () => getHeapStatistics().used_heap_size,
    quietMs: 5000,
    growthBytes: 64 * 2 ** 20,
    releasedMin: 10_000,
  });
  let timer: NodeJS.Timeout | null = null;
  return {
    collector,
    get lastCollectionMs(): number {
      return lastCollectionMs;
    },
    get lastPauseMs(): number {
      return lastPauseMs;
    },
    /**
     * Watch a server's work and evictions, and collect `alsoCollect` (its storage's checkpoint
     * worker) with the process; returns what ends it.
     */
    watch(server: Server, alsoCollect: () => void = () => {}): () => void {
      sources.add(server);
      others.add(alsoCollect);
      timer ??= setInterval(() => {
        let work = 0;
        let released = 0;
        for (const source of sources) {
          work += source.counters.turns + source.counters.nodesEvicted;
          released += source.counters.nodesEvicted;
        }
        collector.observe(performance.now(), work, released);
      }, idleCheckMs).unref();
      return () => {
        sources.delete(server);
        others.delete(alsoCollect);
        if (sources.size === 0 && timer !== null) {
          clearInterval(timer);
          timer = null;
        }
      };
    },
  };
})();
