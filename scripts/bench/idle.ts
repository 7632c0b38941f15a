/**
 * Idle nodes on a real server process: memory per resident node, CPU while idle, and messages
 * while idle with few and with many cells.
 *
 * Seven server processes run (so heartbeats between servers are real). First `--baseline-cells`
 * cells are created on all their members and the colony is measured idle; then server s1 alone
 * receives the founding nodes of more cells (7 members each, peers s2..s7: a founding node exists
 * without its peers) until it hosts `--nodes` nodes, and the colony is measured idle again.
 *
 * s1 keeps quiet nodes resident for `--resident-idle` seconds (its `residentIdleSeconds`), longer
 * than the load takes, so that its memory can be read with every node resident once the server,
 * quiet again, has collected the load's garbage (IdleCollector); the memory right after the load
 * is reported too. Then the nodes are left to be evicted and the colony is measured idle a third
 * time.
 */
import {
  type BenchmarkReport,
  type Children,
  cpuUsOf,
  type Options,
  progress,
  round,
  sleep,
} from "./common.ts";
import { BenchColony, cellKeys } from "./physalia-colony.ts";

interface IdleWindow {
  readonly hostedNodesOnS1: number;
  readonly residentNodesOnS1: number;
  readonly seconds: number;
  /** CPU of s1 over the window, as a percentage of one core. */
  readonly cpuPercentOfCoreS1: number;
  /** CPU of all seven servers together, as a percentage of one core. */
  readonly cpuPercentOfCoreAllServers: number;
  readonly messagesOutPerSecondS1: number;
  readonly messagesOutPerSecondAllServers: number;
  /** Transport frames sent (these include the servers' failure-detector heartbeats). */
  readonly framesSentPerSecondS1: number;
  readonly framesSentPerSecondAllServers: number;
  /** Nodes s1 evicted during the window (quiet for a minute): work that is not idle. */
  readonly nodesEvictedS1: number;
}

const messagesOut = "physalia_messages_out_total";
const idleCollections = "physalia_idle_collections_total";
/** How long to wait after the load for s1 to collect its garbage before reading its memory. */
const collectWaitMsMax = 90_000;
/** How long to wait, after the eviction wait, for the heap to shrink back before the last window. */
const settleWaitMsMax = 180_000;
const framesSent = "physalia_transport_frames_sent_total";

async function idleWindow(colony: BenchColony, seconds: number): Promise<IdleWindow> {
  const s1 = colony.pid("s1");
  const s1Metrics0 = await colony.metrics("s1");
  const all0 = await colony.counterSum(messagesOut);
  const allFrames0 = await colony.counterSum(framesSent);
  const cpu0 = cpuUsOf([s1]);
  const cpuAll0 = cpuUsOf(colony.pids);
  const started = performance.now();
  await sleep(seconds * 1000);
  const wallUs = (performance.now() - started) * 1000;
  const cpu = cpuUsOf([s1]) - cpu0;
  const cpuAll = cpuUsOf(colony.pids) - cpuAll0;
  const s1Metrics = await colony.metrics("s1");
  // At the end of the window: lmdb's statistics (hosted nodes) trail fresh writes.
  const status = await colony.status("s1");
  const delta = (name: string) => (s1Metrics.get(name) ?? 0) - (s1Metrics0.get(name) ?? 0);
  const all = (await colony.counterSum(messagesOut)) - all0;
  const allFrames = (await colony.counterSum(framesSent)) - allFrames0;
  const wallSeconds = wallUs / 1e6;
  return {
    hostedNodesOnS1: status.hostedNodes,
    residentNodesOnS1: status.residentNodes,
    seconds: round(wallSeconds, 1),
    cpuPercentOfCoreS1: round((100 * cpu) / wallUs, 2),
    cpuPercentOfCoreAllServers: round((100 * cpuAll) / wallUs, 2),
    messagesOutPerSecondS1: round(delta(messagesOut) / wallSeconds, 1),
    messagesOutPerSecondAllServers: round(all / wallSeconds, 1),
    framesSentPerSecondS1: round(delta(framesSent) / wallSeconds, 1),
    framesSentPerSecondAllServers: round(allFrames / wallSeconds, 1),
    nodesEvictedS1: delta("physalia_nodes_evicted_total"),
  };
}

async function memory(colony: BenchColony) {
  const metrics = await colony.metrics("s1");
  const status = await colony.status("s1");
  return {
    rssBytes: colony.rssBytes("s1"),
    ...colony.residentMemory("s1"),
    heapUsedBytes: metrics.get("nodejs_heap_used_bytes") ?? 0,
    heapTotalBytes: metrics.get("nodejs_heap_total_bytes") ?? 0,
    idleCollections: metrics.get(idleCollections) ?? 0,
    idleCollectionLastSeconds: metrics.get("physalia_idle_collection_last_seconds") ?? 0,
    idleCollectionPauseSeconds: metrics.get("physalia_idle_collection_longest_pause_seconds") ?? 0,
    residentNodes: status.residentNodes,
    hostedNodes: status.hostedNodes,
  };
}

export async function idleBenchmark(children: Children, options: Options): Promise<BenchmarkReport> {
  const nodes = options.integer("nodes", 1_000_000);
  const baselineCells = options.integer("baseline-cells", 1000);
  const idleSeconds = options.number("idle-seconds", 30);
  const residentIdleSeconds = options.integer("resident-idle", 240);
  const evictWaitSeconds = options.number("evict-wait", residentIdleSeconds + 30, 0);
  options.finish();
  if (nodes < baselineCells)
    throw new Error(`--nodes (${nodes}) must be at least --baseline-cells (${baselineCells})`);

  const colony = await BenchColony.create(children, children.tempDir("physalia-bench-idle-"), 7, 7, {
    s1: { residentIdleSeconds },
  });
  try {
    progress("starting 7 Physalia server processes");
    await colony.startAll();
    await sleep(2000);
    const empty = await memory(colony);
    progress(`creating ${baselineCells} cells on all their members; then ${idleSeconds} s idle`);
    await colony.createCells(cellKeys(baselineCells, "base"));
    const few = await idleWindow(colony, idleSeconds);
    const before = await memory(colony);

    const extra = nodes - baselineCells;
    progress(`creating ${extra} more founding nodes on s1 (7-member cells, s1 only)`);
    const loadStarted = performance.now();
    const keys = cellKeys(extra, "idle");
    const chunk = 50_000;
    for (let i = 0; i < keys.length; i += chunk) {
      await colony.createCells(keys.slice(i, i + chunk), "s1");
      if (i > 0 && (i / chunk) % 4 === 0) progress(`  ${i + chunk} created`);
    }
    const loadSeconds = (performance.now() - loadStarted) / 1000;
    const loadEnded = performance.now();
    await sleep(2000);
    const peak = await memory(colony);
    progress(`waiting up to ${collectWaitMsMax / 1000} s for s1, quiet again, to collect the load's garbage`);
    const collectStarted = performance.now();
    let after = peak;
    while (performance.now() - collectStarted < collectWaitMsMax) {
      // The counter moves when the collection starts; the reading after that sees its result.
      const collected = after.idleCollections > peak.idleCollections;
      await sleep(2000);
      after = await memory(colony);
      if (collected) break;
    }
    const collectSeconds = round((performance.now() - collectStarted) / 1000);
    const addedResident = Math.max(1, after.residentNodes - before.residentNodes);
    progress(`${after.hostedNodes} nodes hosted on s1; ${idleSeconds} s idle`);
    const many = await idleWindow(colony, idleSeconds);

    const waitMs = evictWaitSeconds * 1000 - (performance.now() - loadEnded);
    if (waitMs > 0) {
      progress(`waiting ${Math.round(waitMs / 1000)} s for quiet nodes to be evicted`);
      await sleep(waitMs);
    }
    const evicted = await memory(colony);
    // The evicted nodes are garbage until V8 collects them, and collecting a heap of a gigabyte
    // takes CPU: the steady idle state starts once the heap is back near its size before the load.
    const settleStarted = performance.now();
    const settledHeapBytes = Math.max(3 * before.heapUsedBytes, 100 * 2 ** 20);
    let settled = evicted;
    while (performance.now() - settleStarted < settleWaitMsMax) {
      settled = await memory(colony);
      if (settled.residentNodes === 0 && settled.heapUsedBytes <= settledHeapBytes) break;
      await sleep(2_000);
    }
    const settleSeconds = round((performance.now() - settleStarted) / 1000);
    progress(
      `${settled.residentNodes} resident of ${settled.hostedNodes} hosted on s1, heap ${mib(settled.heapUsedBytes)} after ${settleSeconds} s more; ${idleSeconds} s idle`,
    );
    const hosted = await idleWindow(colony, idleSeconds);
    const results = {
      servers: 7,
      cellSize: 7,
      placement: "baseline cells on all 7 members; the other nodes are founding nodes on s1 only",
      creationSeconds: round(loadSeconds, 1),
      creationNodesPerSecond: Math.round(extra / loadSeconds),
      memoryEmpty: empty,
      memoryBeforeLoad: before,
      memoryRightAfterLoad: peak,
      memoryAfterLoad: { waitedSeconds: collectSeconds, ...after },
      rssBytesPerResidentNodeRightAfterLoad: Math.round(
        (peak.rssBytes - before.rssBytes) / Math.max(1, peak.residentNodes - before.residentNodes),
      ),
      rssBytesPerResidentNode: Math.round((after.rssBytes - before.rssBytes) / addedResident),
      anonRssBytesPerResidentNode: Math.round((after.anonBytes - before.anonBytes) / addedResident),
      fileRssBytesPerResidentNode: Math.round((after.fileBytes - before.fileBytes) / addedResident),
      heapBytesPerResidentNode: Math.round((after.heapUsedBytes - before.heapUsedBytes) / addedResident),
      idleFewCells: few,
      idleManyCells: many,
      idleManyCellsEvicted: hosted,
      afterEvictionWait: { secondsSinceLoad: round((performance.now() - loadEnded) / 1000), ...evicted },
      settled: { waitedSeconds: settleSeconds, ...settled },
    };
    const within = (a: number, b: number) => a <= b * 1.1 + 1;
    const independent =
      within(many.messagesOutPerSecondAllServers, few.messagesOutPerSecondAllServers) &&
      within(many.framesSentPerSecondAllServers, few.framesSentPerSecondAllServers) &&
      within(many.framesSentPerSecondS1, few.framesSentPerSecondS1);
    const w = (label: string, x: IdleWindow) =>
      `idle ${x.seconds} s with ${x.hostedNodesOnS1.toLocaleString("en-US")} nodes on s1 (${x.residentNodesOnS1.toLocaleString("en-US")} resident): ` +
      `s1 CPU ${x.cpuPercentOfCoreS1}% of a core (all 7 servers ${x.cpuPercentOfCoreAllServers}%), ` +
      `cell messages out ${x.messagesOutPerSecondS1}/s from s1 (${x.messagesOutPerSecondAllServers}/s from all servers), ` +
      `transport frames sent incl. heartbeats ${x.framesSentPerSecondS1}/s from s1 (${x.framesSentPerSecondAllServers}/s from all), ` +
      `${x.nodesEvictedS1.toLocaleString("en-US")} nodes evicted by s1 meanwhile [${label}]`;
    return {
      results,
      targets: {
        idleCpu: {
          target: "idle CPU of the server hosting the nodes < 1% of a core (once quiet nodes are evicted)",
          measured: hosted.cpuPercentOfCoreS1,
          met: hosted.cpuPercentOfCoreS1 < 1,
        },
        bytesPerResidentNode: {
          target: "<= 1 KiB of RSS per resident node",
          measured: `${after.residentNodes === peak.residentNodes ? "" : `not judged: ${peak.residentNodes - after.residentNodes} nodes evicted before the reading (raise --resident-idle); `}${results.rssBytesPerResidentNode} bytes (${results.anonRssBytesPerResidentNode} anonymous, ${results.fileRssBytesPerResidentNode} lmdb's mapped file)`,
          // Nodes evicted before the reading (--resident-idle shorter than the load) leave nothing to judge.
          met: after.residentNodes === peak.residentNodes && results.rssBytesPerResidentNode <= 1024,
        },
        idleMessagesIndependentOfCells: {
          target: `messages and frames/s while idle with ${nodes} nodes within 10% of those with ${baselineCells}`,
          measured: `cell messages ${many.messagesOutPerSecondAllServers} vs ${few.messagesOutPerSecondAllServers}/s, frames ${many.framesSentPerSecondAllServers} vs ${few.framesSentPerSecondAllServers}/s`,
          met: independent,
        },
      },
      lines: [
        `creating ${extra.toLocaleString("en-US")} founding nodes on s1 through its admin port: ${results.creationSeconds} s (${results.creationNodesPerSecond.toLocaleString("en-US")} nodes/s)`,
        `s1 right after the load: RSS ${mib(peak.rssBytes)} with ${peak.residentNodes.toLocaleString("en-US")} resident nodes, heap ${mib(peak.heapUsedBytes)} used of ${mib(peak.heapTotalBytes)} (the load's garbage not yet collected): ${results.rssBytesPerResidentNodeRightAfterLoad} bytes of RSS per resident node`,
        `s1 memory ${collectSeconds} s later (${after.idleCollections - peak.idleCollections} collection(s) asked for by the quiet server, the last taking ${round(after.idleCollectionLastSeconds, 2)} s, its longest pause ${round(after.idleCollectionPauseSeconds, 2)} s): RSS ${mib(empty.rssBytes)} empty, ${mib(before.rssBytes)} with ${before.residentNodes} nodes, ${mib(after.rssBytes)} with ${after.residentNodes.toLocaleString("en-US")} resident nodes; heap ${mib(before.heapUsedBytes)} -> ${mib(after.heapUsedBytes)} used, ${mib(after.heapTotalBytes)} reserved`,
        `s1 resident memory by kind: anonymous ${mib(empty.anonBytes)} empty, ${mib(before.anonBytes)} -> ${mib(after.anonBytes)}; lmdb's mapped file ${mib(empty.fileBytes)} empty, ${mib(before.fileBytes)} -> ${mib(after.fileBytes)}`,
        `per resident node: ${results.rssBytesPerResidentNode} bytes of RSS, of which ${results.anonRssBytesPerResidentNode} anonymous (the server's own) and ${results.fileRssBytesPerResidentNode} lmdb's mapped file (page cache); ${results.heapBytesPerResidentNode} bytes of heap`,
        w("few cells", few),
        w("many cells", many),
        `${results.afterEvictionWait.secondsSinceLoad} s after the load: ${evicted.residentNodes.toLocaleString("en-US")} resident of ${evicted.hostedNodes.toLocaleString("en-US")} hosted on s1; RSS ${mib(evicted.rssBytes)}, heap ${mib(evicted.heapUsedBytes)}`,
        `then ${settleSeconds} s until the evicted nodes' memory was collected: RSS ${mib(settled.rssBytes)}, heap ${mib(settled.heapUsedBytes)}`,
        w("many cells, quiet nodes evicted and collected", hosted),
      ],
    };
  } finally {
    await colony.stopAll();
  }
}

function mib(bytes: number): string {
  return `${round(bytes / 2 ** 20)} MiB`;
}
