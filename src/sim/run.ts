/**
 * One seeded simulation run: a colony, a random workload of transactions and reads from several
 * clients, a random fault schedule, then a liveness phase that heals everything and requires
 * every cell to make progress, and finally every checker. Every knob derives from the seed.
 */

import type { Transaction, Write } from "../cell/index.ts";
import type { CellKey, Prng, ServerId } from "../core/index.ts";
import type { PlantedBugs } from "../paxos/index.ts";
import { checkHistory } from "./checks.ts";
import { SimWorld } from "./world.ts";

/** "disk": the crashes of "crash", on disks of different speeds, some slower than the network. */
export type FaultMix = "none" | "net" | "crash" | "all" | "disk";

export const faultMixes: readonly FaultMix[] = ["none", "net", "crash", "all", "disk"];

/** The slowest simulated disk of the "disk" mix: writes of about 30 ms, against 1-2 ms hops. */
const slowDiskLatencyMs = 30;

export interface SimOptions {
  readonly seed: number;
  readonly servers?: number;
  readonly cells?: number;
  readonly ops?: number;
  readonly faults?: FaultMix;
  readonly clients?: number;
  readonly bugs?: PlantedBugs | null;
  /** Steps the linearizability search may take per cell before answering "unknown". */
  readonly checkStepsMax?: number;
  /** The share of delivered messages damaged on the wire (WorldOptions.wireDamageRate). */
  readonly wireDamageRate?: number;
  /** Called with the world after the run, for investigation. */
  readonly inspect?: (world: SimWorld) => void;
}

export interface SimReport {
  readonly seed: number;
  readonly servers: number;
  readonly cells: number;
  readonly faults: FaultMix;
  /** Operations of the workload plus one liveness write per cell: the client history checked. */
  readonly opsIssued: number;
  /** Of which the liveness phase's writes. */
  readonly livenessOps: number;
  readonly opsCompleted: number;
  readonly opsFailed: number;
  readonly opsOpen: number;
  readonly violations: string[];
  readonly linearizable: boolean;
  /** Cells whose history the checker could not decide within its budget. */
  readonly undecidedCells: number;
  readonly traceHash: string;
  readonly simulatedMs: number;
  readonly events: number;
  readonly faultsInjected: Readonly<Record<string, number>>;
  /** Quiet nodes evicted from memory and loaded again from the simulated disk when touched. */
  readonly nodesEvicted: number;
  /** Requests relayed to a leader their client could not reach (Server.relay). */
  readonly requestsRelayed: number;
  readonly reproduce: string;
}

const itemNames = ["x", "y", "z"] as const;
const faultPhaseMsMax = 60_000;
const livenessBoundMs = 20_000;

export function reproduceCommand(options: SimOptions): string {
  const o = resolved(options);
  return `npx physalia sim --seed ${o.seed} --servers ${o.servers} --cells ${o.cells} --ops ${o.ops} --faults ${o.faults}`;
}

function resolved(options: SimOptions) {
  return {
    seed: options.seed,
    servers: options.servers ?? 9,
    cells: options.cells ?? 100,
    ops: options.ops ?? 2000,
    faults: options.faults ?? "all",
    clients: options.clients ?? 8,
  };
}

export function runSimulation(options: SimOptions): SimReport {
  const o = resolved(options);
  const world = new SimWorld({
    // Far shorter than production's, so that runs evict quiet nodes and load them again often.
    residentIdleMs: 1_000,
    seed: o.seed,
    servers: o.servers,
    bugs: options.bugs ?? null,
    clockRateMax: o.faults === "none" ? 1 : 1.2,
    clockOffsetMsMax: o.faults === "none" ? 0 : 50,
    ...(options.wireDamageRate === undefined ? {} : { wireDamageRate: options.wireDamageRate }),
    ...(o.faults === "disk" ? { diskLatencyMsMax: slowDiskLatencyMs } : {}),
  });
  const random = world.random.fork();
  const size = Math.min(7, o.servers);
  const cellKeys: CellKey[] = [];
  for (let i = 0; i < o.cells; i++) {
    const key = `cell-${i}`;
    world.createCell(key, size);
    cellKeys.push(key);
  }
  world.run(10);

  const injected: Record<string, number> = {};
  const count = (what: string): void => {
    injected[what] = (injected[what] ?? 0) + 1;
  };
  const faults = new FaultDriver(world, random.fork(), o.faults, cellKeys, count);

  // ---- workload: closed-loop clients
  const clients = Array.from({ length: o.clients }, () => world.addClient());
  let issued = 0;
  let finished = 0;
  let valueCounter = 0;
  const workloadRandom = random.fork();
  const hot = Math.max(1, Math.floor(cellKeys.length / 10));
  const pickCell = (): CellKey =>
    workloadRandom.chance(0.5)
      ? (cellKeys[workloadRandom.below(hot)] as CellKey)
      : workloadRandom.pick(cellKeys);
  const next = (client: (typeof clients)[number]): void => {
    if (issued >= o.ops) return;
    issued += 1;
    const cellKey = pickCell();
    const done = (): void => {
      finished += 1;
      client.scheduler.setTimer(workloadRandom.below(20), () => next(client));
    };
    const roll = workloadRandom.float();
    if (roll < 0.3) {
      valueCounter += 1;
      world.transact(
        client,
        cellKey,
        write([{ item: workloadRandom.pick(itemNames), op: "put", value: bytes(valueCounter) }]),
        done,
      );
    } else if (roll < 0.5) {
      world.transact(
        client,
        cellKey,
        write([{ item: "n", op: "add", delta: BigInt(1 + workloadRandom.below(5)) }]),
        done,
      );
    } else if (roll < 0.65) {
      valueCounter += 1;
      const item = workloadRandom.pick(itemNames);
      const guess = workloadRandom.below(valueCounter) + 1;
      world.transact(
        client,
        cellKey,
        {
          conditions: [
            workloadRandom.chance(0.3)
              ? { item, op: "missing" }
              : { item, op: "equals", value: bytes(guess) },
          ],
          reads: [item],
          writes: [{ item, op: "put", value: bytes(valueCounter) }],
        },
        done,
      );
    } else if (roll < 0.9) {
      world.read(
        client,
        cellKey,
        { conditions: [], reads: ["x", "y", "z", "n"], writes: [] },
        "linearizable",
        done,
      );
    } else {
      world.read(client, cellKey, { conditions: [], reads: ["x", "n"], writes: [] }, "eventual", done);
    }
  };
  for (const client of clients) client.scheduler.setTimer(random.below(10), () => next(client));

  // ---- fault phase: until the workload is done (or a time bound)
  faults.start();
  world.runUntil(() => finished >= o.ops, faultPhaseMsMax);
  faults.stop();

  // ---- liveness phase: heal everything; every cell must commit a write within the bound.
  world.heal();
  for (const id of world.serverIds()) world.restart(id);
  world.run(1000);
  const probe = world.addClient();
  const pendingLiveness = new Set(cellKeys);
  for (const cellKey of cellKeys) {
    world.transact(probe, cellKey, write([{ item: "live", op: "add", delta: 1n }]), (entry) => {
      if (entry.output?.status === "committed") pendingLiveness.delete(cellKey);
    });
  }
  world.runUntil(() => pendingLiveness.size === 0, livenessBoundMs);
  const violations = [...world.violations];
  for (const cellKey of pendingLiveness) {
    violations.push(`liveness: cell ${cellKey} made no progress within ${livenessBoundMs} ms after healing`);
  }
  // Let followers learn the last commits, then compare replicas.
  world.run(3000);
  for (const cellKey of cellKeys) {
    const problem = world.checkReplicaStates(cellKey);
    if (problem !== null) violations.push(problem);
  }

  // ---- history checks
  let completed = 0;
  let failed = 0;
  let open = 0;
  for (const entry of world.history) {
    if (entry.returnMs !== null) completed += 1;
    else if (entry.failure === "outcome_unknown" || (entry.failure === null && entry.consistency === "write"))
      open += 1;
    else failed += 1;
  }
  const history = checkHistory(world, { maxSteps: options.checkStepsMax ?? 2_000_000 });
  violations.push(...history.violations);
  const linearizable = history.linearizable;
  const undecided = history.undecidedCells;

  options.inspect?.(world);
  const trace = world.trace.addNumber(completed).addNumber(failed).addNumber(open).digest();
  return {
    seed: o.seed,
    servers: o.servers,
    cells: o.cells,
    faults: o.faults,
    opsIssued: issued + cellKeys.length,
    livenessOps: cellKeys.length,
    opsCompleted: completed,
    opsFailed: failed,
    opsOpen: open,
    violations,
    linearizable,
    undecidedCells: undecided,
    traceHash: trace,
    simulatedMs: Math.round(world.nowMs),
    events: world.queue.executed,
    faultsInjected: injected,
    nodesEvicted: world.nodesEvicted,
    requestsRelayed: world.requestsRelayed,
    reproduce: reproduceCommand(options),
  };
}

function write(writes: Write[]): Transaction {
  return { conditions: [], reads: [], writes };
}

function bytes(n: number): Uint8Array {
  return new TextEncoder().encode(`v${n}`);
}

/** Injects faults at random times during the fault phase. */
class FaultDriver {
  private running = false;
  private readonly down = new Set<ServerId>();
  private readonly moving = new Set<CellKey>();
  /** Cells with one node whose stored record was damaged (at most one per cell). */
  private readonly damagedCells = new Set<CellKey>();

  constructor(
    private readonly world: SimWorld,
    private readonly random: Prng,
    private readonly mix: FaultMix,
    private readonly cellKeys: readonly CellKey[],
    private readonly count: (what: string) => void,
  ) {}

  start(): void {
    if (this.mix === "none") return;
    this.running = true;
    this.schedule();
  }

  stop(): void {
    this.running = false;
  }

  private schedule(): void {
    const delay = 100 + this.random.below(600);
    this.world.queue.schedule(this.world.nowMs + delay, () => {
      if (!this.running) return;
      this.inject();
      this.schedule();
    });
  }

  private later(ms: number, action: () => void): void {
    this.world.queue.schedule(this.world.nowMs + ms, () => {
      if (this.running) action();
    });
  }

  private inject(): void {
    const world = this.world;
    const random = this.random;
    const net = this.mix === "net" || this.mix === "all";
    const crash = this.mix === "crash" || this.mix === "all" || this.mix === "disk";
    const choices: (() => void)[] = [];
    const ids = world.serverIds();
    if (net) {
      choices.push(() => {
        const shuffled = random.shuffle([...ids]);
        const cut = 1 + random.below(ids.length - 1);
        world.partition(shuffled.slice(0, cut), shuffled.slice(cut));
        this.count("partition");
        this.later(200 + random.below(1500), () => world.heal());
      });
      choices.push(() => {
        const shuffled = random.shuffle([...ids]);
        const cut = 1 + random.below(ids.length - 1);
        world.partitionOneWay(shuffled.slice(0, cut), shuffled.slice(cut));
        this.count("asymmetric-partition");
        this.later(200 + random.below(1500), () => world.heal());
      });
      choices.push(() => {
        world.network.faults.lossRate = random.float() * 0.2;
        world.network.faults.duplicateRate = random.float() * 0.1;
        world.network.faults.delayMsJitter = 1 + random.below(20);
        this.count("lossy-network");
        this.later(300 + random.below(2000), () => {
          world.network.faults.lossRate = 0;
          world.network.faults.duplicateRate = 0;
          world.network.faults.delayMsJitter = 1;
        });
      });
      choices.push(() => {
        const from = random.pick(ids);
        const to = random.pick(ids);
        world.network.clog(from, to, 50 + random.below(500), world.nowMs + 200 + random.below(2000));
        this.count("clog");
      });
      choices.push(() => {
        // A client cut off from some of the servers (its cells' leaders among them, at times):
        // its requests go around them, relayed by nodes that still hear their leader.
        if (world.clients.length === 0) return;
        const client = random.pick(world.clients);
        const servers = random.shuffle([...ids]).slice(0, 1 + random.below(3));
        world.partition(servers, [client.address]);
        this.count("client-cut");
        this.later(500 + random.below(3000), () => world.heal());
      });
    }
    if (crash) {
      choices.push(() => {
        const id = random.pick(ids);
        if (this.down.has(id)) return;
        this.down.add(id);
        world.crash(id, 0.5);
        this.count("crash");
        this.later(100 + random.below(2000), () => {
          this.down.delete(id);
          world.restart(id);
        });
      });
      choices.push(() => {
        // Bit rot: one node's stored record is damaged while its server is down. It comes back as
        // a non-voting learner. At most one node per cell, so every cell keeps a voting majority.
        const cellKey = random.pick(this.cellKeys);
        if (this.damagedCells.has(cellKey)) return;
        const members = (world.cells.get(cellKey) ?? [])
          .map((m) => m.serverId)
          .filter((id) => !this.down.has(id));
        if (members.length === 0) return;
        const id = random.pick(members);
        this.down.add(id);
        world.crash(id, 0);
        if (world.slot(id).disk.damage(cellKey)) {
          this.damagedCells.add(cellKey);
          this.count("damaged-record");
        }
        this.later(100 + random.below(1000), () => {
          this.down.delete(id);
          world.restart(id);
        });
      });
      choices.push(() => {
        // Dirty reboot of every server of one cell at once.
        const cellKey = random.pick(this.cellKeys);
        const members = (world.cells.get(cellKey) ?? [])
          .map((m) => m.serverId)
          .filter((id) => !this.down.has(id));
        for (const id of members) {
          this.down.add(id);
          world.crash(id, 0.5);
        }
        this.count("dirty-reboot-cell");
        this.later(100 + random.below(1000), () => {
          for (const id of members) {
            this.down.delete(id);
            world.restart(id);
          }
        });
      });
    }
    if (this.mix === "all") {
      choices.push(() => {
        const cellKey = random.pick(this.cellKeys);
        if (this.moving.has(cellKey)) return;
        const members = world.cells.get(cellKey) ?? [];
        const outside = ids.filter((id) => !members.some((m) => m.serverId === id));
        if (outside.length === 0 || members.length === 0) return;
        this.moving.add(cellKey);
        this.count("move-node");
        world.changeMembership(cellKey, { add: random.pick(outside), remove: random.pick(members) }, () => {
          this.moving.delete(cellKey);
        });
      });
    }
    if (choices.length > 0) random.pick(choices)();
  }
}

export function formatReport(report: SimReport): string {
  const lines = [
    `seed ${report.seed}: ${report.servers} servers, ${report.cells} cells, faults ${report.faults}`,
    `operations: ${report.opsIssued} issued (${report.livenessOps} of them liveness writes), ${report.opsCompleted} completed, ${report.opsFailed} failed, ${report.opsOpen} with unknown outcome`,
    `faults injected: ${
      Object.entries(report.faultsInjected)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "none"
    }; requests relayed to a leader their client could not reach: ${report.requestsRelayed}`,
    `simulated ${(report.simulatedMs / 1000).toFixed(1)} s in ${report.events} events; trace ${report.traceHash}`,
    `linearizable: ${report.linearizable ? "yes" : "NO"}${report.undecidedCells > 0 ? ` (${report.undecidedCells} cells undecided)` : ""}`,
    `violations: ${report.violations.length}`,
  ];
  for (const violation of report.violations.slice(0, 20)) lines.push(`  - ${violation}`);
  if (report.violations.length > 0) lines.push(`reproduce with: ${report.reproduce}`);
  return lines.join("\n");
}
