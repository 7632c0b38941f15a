/**
 * Failover: how long the cells a server leads stop taking writes when that server is killed
 * with kill -9, and whether every acknowledged write survives it.
 *
 * A colony of 7 server processes with cells of 7 (every server hosts a node of every cell). One
 * client in this process keeps one writer per cell, each adding 1 to the cell's counter item
 * (exactly once, through the client's sessions) and pausing `--interval` ms between writes.
 * After the warm-up, the leader of every cell is asked for (`describe`; only a node that says it
 * leads is believed), and the server leading the most cells is killed. The writers go on for
 * `--after` seconds, then stop; every cell is read (linearizably) and its counter must be at
 * least the last value a write of it acknowledged. Then the killed server is started again and
 * timed to /healthz.
 *
 * A cell's outage is the longest gap between two consecutive acknowledgements of its writes from
 * the last one before the kill on (a write already committed when the server died may still be
 * acknowledged right after the kill; the gap after it is the outage). Cells led by the killed
 * server are reported apart from the others. A cell without a failover shows its longest write
 * latency of the window plus the interval; the same gap over the seconds before the kill is
 * printed beside each figure as the baseline.
 */
import { PhysaliaClient } from "../../src/index.ts";
import {
  type BenchmarkReport,
  type Children,
  type Options,
  percentile,
  progress,
  sleep,
  sorted,
} from "./common.ts";
import { startPhysalia } from "./workloads.ts";

const counterItem = "n";

interface CellTrack {
  readonly cellKey: string;
  /** The counter value the last acknowledged write returned. */
  lastAcked: bigint;
  /** performance.now() of the last acknowledgement (before the kill: where the outage starts). */
  lastAckMs: number;
  /** The longest gap between acknowledgements in the window before the kill (the baseline). */
  baselineGapMs: number;
  /** performance.now() of every acknowledgement after the kill, in order (bounded by the run). */
  readonly acksAfterKill: number[];
  errors: number;
  lastError: string;
}

export async function failoverBenchmark(children: Children, options: Options): Promise<BenchmarkReport> {
  const cells = options.integer("cells", 100);
  // Each writer waits this long between writes: the load stays well below what the machine
  // takes, so that what a kill costs is not lost in the pauses of saturated servers.
  const intervalMs = options.number("interval", 50, 0);
  const warmupSeconds = options.number("warmup", 10, 1);
  const afterSeconds = options.number("after", 10, 2);
  options.finish();

  const { system, colony } = await startPhysalia(children, 7, cells);
  let client: PhysaliaClient | null = null;
  let running = true;
  const writers: Promise<void>[] = [];
  try {
    client = await PhysaliaClient.connect({ colony: colony.connectionFile });
    const c = client;
    let killedAt = Number.POSITIVE_INFINITY;
    // The baseline: the same gap measured over the seconds right before the kill, when nothing
    // fails (servers still pause for their checkpoints and collections).
    const baselineSeconds = Math.min(afterSeconds, warmupSeconds / 2);
    const baselineFrom = performance.now() + (warmupSeconds - baselineSeconds) * 1000;
    const tracks: CellTrack[] = system.keys.map((cellKey) => ({
      cellKey,
      lastAcked: 0n,
      lastAckMs: 0,
      baselineGapMs: 0,
      acksAfterKill: [],
      errors: 0,
      lastError: "",
    }));
    progress(
      `one writer per cell on ${cells} cells of 7, ${intervalMs} ms between writes, ${warmupSeconds} s warm-up`,
    );
    for (const track of tracks) {
      writers.push(
        (async () => {
          const cell = c.cell(track.cellKey);
          while (running) {
            try {
              const value = await cell.add(counterItem, 1n);
              if (value > track.lastAcked) track.lastAcked = value;
              if (intervalMs > 0) await sleep(intervalMs);
              const now = performance.now();
              if (now > killedAt) track.acksAfterKill.push(now);
              else {
                if (now >= baselineFrom && track.lastAckMs >= baselineFrom)
                  track.baselineGapMs = Math.max(track.baselineGapMs, now - track.lastAckMs);
                track.lastAckMs = now;
              }
            } catch (error) {
              track.errors += 1;
              track.lastError = error instanceof Error ? error.message : String(error);
              await sleep(10);
            }
          }
        })(),
      );
    }
    await sleep(warmupSeconds * 1000);

    const leaders = new Map<string, string>();
    const leadCount = new Map<string, number>();
    for (const track of tracks) {
      // Only a node that says it leads is believed: another node's hint may be out of date.
      const status = await c.cell(track.cellKey).describe();
      if (status.role !== "leader") continue;
      const leader = status.node.serverId;
      leaders.set(track.cellKey, leader);
      leadCount.set(leader, (leadCount.get(leader) ?? 0) + 1);
    }
    const [victim, victimLeads] = [...leadCount].sort((a, b) => b[1] - a[1])[0] ?? ["", 0];
    if (victim === "") throw new Error("no cell reported a leader after the warm-up");
    const acksBefore = tracks.reduce((sum, t) => sum + Number(t.lastAcked), 0);

    progress(
      `kill -9 of ${victim}, which leads ${victimLeads} of ${cells} cells; writing on for ${afterSeconds} s`,
    );
    killedAt = performance.now();
    await colony.kill(victim);
    await sleep(afterSeconds * 1000);
    running = false;
    await Promise.all(writers);
    const endedAt = performance.now();

    // Every acknowledged write must be in the cell: its counter is at least the last value a write
    // returned (a write whose answer was lost may have been applied too, so it may be higher).
    let lost = 0;
    const lostCells: string[] = [];
    for (const track of tracks) {
      const value = await c.cell(track.cellKey).get(counterItem);
      const stored = typeof value === "bigint" ? value : 0n;
      if (stored < track.lastAcked) {
        lost += 1;
        if (lostCells.length < 5) lostCells.push(`${track.cellKey}: ${stored} < ${track.lastAcked}`);
      }
    }

    /** The longest gap, and when it began (ms after the kill; negative: before). */
    const gapOf = (t: CellTrack) => {
      let previous = t.lastAckMs;
      let longest = 0;
      let beganMs = 0;
      for (const at of [...t.acksAfterKill, endedAt]) {
        if (at - previous > longest) {
          longest = at - previous;
          beganMs = previous - killedAt;
        }
        previous = at;
      }
      return { longest, beganMs };
    };
    const led = tracks.filter((t) => leaders.get(t.cellKey) === victim);
    const others = tracks.filter((t) => leaders.has(t.cellKey) && leaders.get(t.cellKey) !== victim);
    const unknownLeader = tracks.length - led.length - others.length;
    const summary = (group: CellTrack[]) => {
      const gaps = group.map(gapOf);
      const outages = sorted(gaps.map((g) => g.longest));
      const began = sorted(gaps.map((g) => g.beganMs));
      const baseline = sorted(group.map((t) => t.baselineGapMs));
      return {
        baselineGapP50Ms: Math.round(percentile(baseline, 0.5)),
        baselineGapMaxMs: Math.round(percentile(baseline, 1)),
        outageBeganP50Ms: Math.round(percentile(began, 0.5)),
        cells: group.length,
        neverRecovered: group.filter((t) => t.acksAfterKill.length === 0).length,
        outageP50Ms: Math.round(percentile(outages, 0.5)),
        outageP99Ms: Math.round(percentile(outages, 0.99)),
        outageMaxMs: Math.round(percentile(outages, 1)),
        writesAfterKill: group.reduce((sum, t) => sum + t.acksAfterKill.length, 0),
        errors: group.reduce((sum, t) => sum + t.errors, 0),
      };
    };
    const ledSummary = summary(led);
    const otherSummary = summary(others);

    progress(`starting ${victim} again`);
    const restarted = performance.now();
    colony.start(victim);
    await colony.healthy(victim, 60_000);
    const healthzMs = Math.round(performance.now() - restarted);

    const lastError = tracks.find((t) => t.errors > 0)?.lastError ?? "";
    const results = {
      servers: 7,
      cellSize: 7,
      cells,
      warmupSeconds,
      afterSeconds,
      intervalMs,
      killed: victim,
      killedLeads: victimLeads,
      cellsWithoutKnownLeader: unknownLeader,
      writesAcknowledgedBeforeKill: acksBefore,
      ledByKilled: ledSummary,
      ledByOthers: otherSummary,
      lostAcknowledgedWrites: lost,
      lostExamples: lostCells,
      lastClientError: lastError,
      restartedHealthzMs: healthzMs,
    };
    const describe = (s: typeof ledSummary) =>
      `outage p50 ${s.outageP50Ms} ms, p99 ${s.outageP99Ms} ms, max ${s.outageMaxMs} ms ` +
      `(beginning ${s.outageBeganP50Ms} ms after the kill at the median; ` +
      `the same gap before the kill: p50 ${s.baselineGapP50Ms} ms, max ${s.baselineGapMaxMs} ms); ` +
      `${s.writesAfterKill} writes after the kill, ${s.errors} failed, ${s.neverRecovered} cells never recovered`;
    return {
      results,
      targets: {
        durable: {
          target: "every acknowledged write survives the kill",
          measured: `${lost} of ${cells} cells lost an acknowledged write`,
          met: lost === 0,
        },
        recovered: {
          target: "every cell takes writes again before the run ends",
          measured: `${ledSummary.neverRecovered + otherSummary.neverRecovered} cells did not`,
          met: ledSummary.neverRecovered + otherSummary.neverRecovered === 0,
        },
      },
      lines: [
        `7 servers, ${cells} cells of 7, one writer per cell (${intervalMs} ms between writes); kill -9 of ${victim}, leader of ${victimLeads} cells`,
        `cells it led (${ledSummary.cells}): ${describe(ledSummary)}`,
        `other cells (${otherSummary.cells}): ${describe(otherSummary)}` +
          (unknownLeader > 0
            ? `; ${unknownLeader} cells left out (the node answering describe was not leading)`
            : ""),
        `acknowledged writes lost: ${lost} cells${lostCells.length > 0 ? ` (${lostCells.join("; ")})` : ""}` +
          `; ${victim} answered /healthz ${healthzMs} ms after it was started again`,
        ...(lastError === "" ? [] : [`last client error: ${lastError}`]),
      ],
    };
  } finally {
    running = false;
    await Promise.allSettled(writers);
    await client?.close();
    await system.stop();
  }
}
