/**
 * Where a cell's nodes are, before a control plane moves anything: a cell's founding members
 * follow from its key and the colony's topology alone, by rendezvous hashing with the members
 * spread over racks and power domains. Every client and server computes the same answer with no
 * lookup. Members learned later from the cell itself (redirects, forwarding pointers) take
 * precedence over the computed ones.
 */
import { assert, type CellKey, fmix32, fnv1a, type ServerId } from "../core/index.ts";

export interface ServerPlace {
  readonly id: ServerId;
  readonly rack: string;
  readonly power: string;
}

/**
 * A server's rendezvous score for a cell; lower ranks first, the same on every client and server.
 * FNV-1a over the key, a separator and the server id, finished as murmur3 finishes (fmix32): server
 * ids that differ only in their last character ("s1" .. "s9") must rank independently, and FNV
 * alone leaves their scores close together, which skewed placement (over 9,000 cells of 7 on 9
 * servers, two servers held 4,600 cells against 7,300-7,900 for the others).
 */
export function rendezvousScore(cellKey: CellKey, serverId: ServerId): number {
  return fmix32(fnv1a(serverId, fnv1a("\uffff", fnv1a(cellKey))));
}

function distinct(values: readonly string[]): number {
  return new Set(values).size;
}

/**
 * The founding members of a cell: servers in the order of their rendezvous score for the key,
 * skipping a server whose rack or power domain already holds its share (the size spread evenly
 * over the racks and domains there are), relaxing the spread only when no server is left.
 */
export function placeCell(cellKey: CellKey, servers: readonly ServerPlace[], size: number): ServerId[] {
  assert(Number.isInteger(size) && size >= 1, () => `cell size must be a positive integer, not ${size}`);
  assert(
    size <= servers.length,
    () => `a cell of ${size} nodes needs ${size} servers; the colony has ${servers.length}`,
  );
  const ranked = [...servers]
    .map((server) => ({ server, score: rendezvousScore(cellKey, server.id) }))
    .sort((a, b) => (a.score < b.score ? -1 : a.score > b.score ? 1 : a.server.id < b.server.id ? -1 : 1))
    .map((entry) => entry.server);
  const rackShare = Math.ceil(size / distinct(servers.map((s) => s.rack)));
  const powerShare = Math.ceil(size / distinct(servers.map((s) => s.power)));
  const chosen: ServerPlace[] = [];
  for (let slack = 0; chosen.length < size; slack++) {
    for (const server of ranked) {
      if (chosen.length === size) break;
      if (chosen.includes(server)) continue;
      const sameRack = chosen.filter((s) => s.rack === server.rack).length;
      const samePower = chosen.filter((s) => s.power === server.power).length;
      if (sameRack < rackShare + slack && samePower < powerShare + slack) chosen.push(server);
    }
  }
  return chosen.map((server) => server.id);
}

/** Cells whose membership was learned from the cell itself, kept in memory at most. */
const learnedCellsMax = 100_000;

/** Resolves a cell's members from the topology, overridden by what the cell itself reported. */
export class TopologyDiscovery {
  private readonly learnedMembers = new Map<CellKey, { members: readonly ServerId[]; epoch: number }>();

  constructor(
    private readonly servers: readonly ServerPlace[],
    private readonly cellSize: number,
  ) {}

  members(cellKey: CellKey): readonly ServerId[] | null {
    const learned = this.learnedMembers.get(cellKey);
    if (learned !== undefined) return learned.members;
    if (this.servers.length < this.cellSize) return null;
    return placeCell(cellKey, this.servers, this.cellSize);
  }

  learned(cellKey: CellKey, members: readonly ServerId[], epoch: number): void {
    const known = this.learnedMembers.get(cellKey);
    if (known !== undefined && known.epoch >= epoch) return;
    this.learnedMembers.delete(cellKey);
    this.learnedMembers.set(cellKey, { members: [...members], epoch });
    if (this.learnedMembers.size > learnedCellsMax) {
      const oldest = this.learnedMembers.keys().next().value;
      if (oldest !== undefined) this.learnedMembers.delete(oldest);
    }
  }
}
