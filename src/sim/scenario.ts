/**
 * A fluent harness over SimWorld for short scenario tests (the paper's SimWorld tests are a few
 * lines each). Every operation runs simulated time until it ends or its deadline passes; `check()`
 * runs every checker over what happened.
 */

import type { Transaction, TxnResult, Value } from "../cell/index.ts";
import type { Consistency, ResumedSession } from "../client/index.ts";
import { assert, type CellKey, type NodeId, type ServerId } from "../core/index.ts";
import type { MembershipChange, MembershipResult, PlantedBugs, ReplicaStatus } from "../paxos/index.ts";
import { checkHistory } from "./checks.ts";
import { type HistoryEntry, SimWorld } from "./world.ts";

export interface ScenarioOptions {
  readonly seed?: number;
  readonly servers?: number;
  readonly bugs?: PlantedBugs;
  readonly clockRateMax?: number;
}

export class Scenario {
  readonly world: SimWorld;
  private readonly client;
  operationDeadlineMs = 15_000;

  constructor(options: ScenarioOptions = {}) {
    this.world = new SimWorld({
      seed: options.seed ?? 1,
      servers: options.servers ?? 7,
      bugs: options.bugs ?? null,
      clockRateMax: options.clockRateMax ?? 1,
    });
    this.client = this.world.addClient();
    this.world.run(5);
  }

  /** Create a cell on the given servers (default: the first seven). */
  cell(cellKey: CellKey, on?: readonly ServerId[]): this {
    this.world.createCell(cellKey, 7, on ?? this.world.serverIds().slice(0, 7));
    this.world.run(5);
    return this;
  }

  newClient(
    options: {
      clockRate?: number;
      distance?: (serverId: ServerId) => number;
      sessions?: readonly ResumedSession[];
    } = {},
  ) {
    return this.world.addClient(options);
  }

  /** Run a transaction to its end; returns the history entry (output or failure). */
  transact(cellKey: CellKey, txn: Transaction, client = this.client): HistoryEntry {
    let done = false;
    const entry =
      txn.writes.length === 0
        ? this.world.read(client, cellKey, txn, "linearizable", () => {
            done = true;
          })
        : this.world.transact(client, cellKey, txn, () => {
            done = true;
          });
    this.world.runUntil(() => done, this.operationDeadlineMs);
    // Leave a gap so the next operation is ordered after this one in real time.
    this.world.run(1);
    return entry;
  }

  put(cellKey: CellKey, item: string, value: Value, client = this.client): HistoryEntry {
    return this.transact(
      cellKey,
      { conditions: [], reads: [], writes: [{ item, op: "put", value }] },
      client,
    );
  }

  add(cellKey: CellKey, item: string, delta: bigint, client = this.client): HistoryEntry {
    return this.transact(
      cellKey,
      { conditions: [], reads: [], writes: [{ item, op: "add", delta }] },
      client,
    );
  }

  /** Read one item; returns its value (or undefined if the read failed). */
  get(
    cellKey: CellKey,
    item: string,
    consistency: Consistency = "linearizable",
    client = this.client,
  ): Value | null | undefined {
    let done = false;
    const entry = this.world.read(
      client,
      cellKey,
      { conditions: [], reads: [item], writes: [] },
      consistency,
      () => {
        done = true;
      },
    );
    this.world.runUntil(() => done, this.operationDeadlineMs);
    this.world.run(1);
    const output: TxnResult | undefined = entry.output;
    if (output === undefined || output.status !== "committed" || output.reads === null) return undefined;
    return output.reads[0]?.value ?? null;
  }

  /** Start an operation without waiting for it. */
  startPut(cellKey: CellKey, item: string, value: Value, client = this.client): HistoryEntry {
    return this.world.transact(client, cellKey, {
      conditions: [],
      reads: [],
      writes: [{ item, op: "put", value }],
    });
  }

  changeMembership(cellKey: CellKey, change: MembershipChange): MembershipResult | string | undefined {
    let result: MembershipResult | string | undefined;
    this.world.changeMembership(cellKey, change, (r) => {
      result = r;
    });
    this.world.runUntil(() => result !== undefined, this.operationDeadlineMs);
    return result;
  }

  statuses(cellKey: CellKey): (ReplicaStatus & { serverId: ServerId })[] {
    const out: (ReplicaStatus & { serverId: ServerId })[] = [];
    for (const slot of this.world.servers) {
      const status = slot.server?.cellStatus(cellKey);
      if (status !== null && status !== undefined) out.push({ ...status, serverId: slot.id });
    }
    return out;
  }

  /** The server whose node leads the cell, if exactly one node believes it leads. */
  leader(cellKey: CellKey): ServerId | null {
    const leaders = this.statuses(cellKey).filter((s) => s.role === "leader");
    return leaders.length === 1 ? (leaders[0]?.serverId ?? null) : null;
  }

  members(cellKey: CellKey): NodeId[] {
    return this.world.cells.get(cellKey) ?? [];
  }

  run(ms: number): this {
    this.world.run(ms);
    return this;
  }

  crash(...ids: ServerId[]): this {
    for (const id of ids) this.world.crash(id);
    return this;
  }

  restart(...ids: ServerId[]): this {
    for (const id of ids) this.world.restart(id);
    return this;
  }

  partition(a: readonly ServerId[], b: readonly ServerId[]): this {
    this.world.partition(a, b);
    return this;
  }

  heal(): this {
    this.world.heal();
    return this;
  }

  /** Every checker over everything so far: chosen values, replica states, linearizability. */
  check(): string[] {
    const history = checkHistory(this.world, { maxSteps: 5_000_000 });
    assert(history.undecidedCells === 0, "a cell history was too large to decide");
    const problems = [...this.world.violations, ...history.violations];
    for (const cellKey of this.world.cells.keys()) {
      const replicas = this.world.checkReplicaStates(cellKey);
      if (replicas !== null) problems.push(replicas);
    }
    return problems;
  }
}

export function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

export function text(value: Value | null | undefined): string | null | undefined {
  if (value === null || value === undefined) return value;
  if (value instanceof Uint8Array) return new TextDecoder().decode(value);
  return String(value);
}
