/**
 * Membership lives in the replicated state. A change committed at slot i governs slots from
 * i + pipelineDepth on (the pipeline may already hold slots up to i + pipelineDepth - 1 under
 * the old membership). Every change bumps the epoch. One change may be pending at a time.
 */
import { assert, formatNodeId, limits, type NodeId, nodeIdEquals } from "../core/index.ts";
import { INCARNATION_MAX } from "./ballot.ts";
import type { Configuration, MembershipChange, MembershipResult, MembershipState } from "./types.ts";

/** What is wrong with a new cell's members, or null: for input from outside, before any cell is made. */
export function initialMembersProblem(members: readonly NodeId[]): string | null {
  if (members.length < 1 || members.length > limits.membersMax)
    return `a cell has 1 to ${limits.membersMax} members, not ${members.length}`;
  for (const m of members) {
    if (!Number.isSafeInteger(m.incarnation) || m.incarnation < 1 || m.incarnation > INCARNATION_MAX)
      return `incarnations are integers from 1 to ${INCARNATION_MAX}, not ${m.incarnation}`;
  }
  if (new Set(members.map((m) => m.serverId)).size !== members.length) return "two members on one server";
  if (new Set(members.map((m) => m.incarnation)).size !== members.length)
    return "two members with one incarnation";
  return null;
}

export function initialMembership(members: readonly NodeId[]): MembershipState {
  const problem = initialMembersProblem(members);
  assert(problem === null, () => `initial membership: ${problem}`);
  const nextIncarnation = Math.max(...members.map((m) => m.incarnation)) + 1;
  return { epoch: 1, nextIncarnation, configurations: [{ fromSlot: 1, epoch: 1, members: [...members] }] };
}

/** The membership that governs `slot`. Slots must not precede the oldest retained configuration. */
export function configurationFor(state: MembershipState, slot: number): Configuration {
  const configurations = state.configurations;
  for (let i = configurations.length - 1; i > 0; i--) {
    const configuration = configurations[i] as Configuration;
    if (configuration.fromSlot <= slot) return configuration;
  }
  return configurations[0] as Configuration;
}

export function latestConfiguration(state: MembershipState): Configuration {
  return state.configurations[state.configurations.length - 1] as Configuration;
}

export function majority(memberCount: number): number {
  return (memberCount >> 1) + 1;
}

export function memberIndex(configuration: Configuration, node: NodeId): number {
  const members = configuration.members;
  for (let i = 0; i < members.length; i++) {
    const m = members[i] as NodeId;
    if (m.incarnation === node.incarnation && m.serverId === node.serverId) return i;
  }
  return -1;
}

export function memberByIncarnation(state: MembershipState, incarnation: number): NodeId | null {
  for (let c = state.configurations.length - 1; c >= 0; c--) {
    for (const m of (state.configurations[c] as Configuration).members) {
      if (m.incarnation === incarnation) return m;
    }
  }
  return null;
}

/** Why a change cannot be applied to this state at `slot`, or null. Pure and deterministic. */
export function membershipChangeProblem(
  state: MembershipState,
  change: MembershipChange,
  slot: number,
): string | null {
  const latest = latestConfiguration(state);
  if (latest.fromSlot > slot) {
    return `a membership change is already pending (it takes effect at slot ${latest.fromSlot})`;
  }
  if (change.add === null && change.remove === null) return "the change neither adds nor removes a node";
  const members = latest.members;
  let size = members.length;
  if (change.remove !== null) {
    const remove = change.remove;
    if (!members.some((m) => nodeIdEquals(m, remove))) return `node ${formatNodeId(remove)} is not a member`;
    size -= 1;
  }
  if (change.add !== null) {
    const add = change.add;
    const stays = members.filter((m) => change.remove === null || !nodeIdEquals(m, change.remove));
    if (stays.some((m) => m.serverId === add)) return `server ${add} already hosts a member of this cell`;
    if (state.nextIncarnation > INCARNATION_MAX) return "the cell has used up its incarnations";
    size += 1;
  }
  if (size < 1) return "a cell must keep at least one member";
  if (size > limits.membersMax) return `a cell has at most ${limits.membersMax} members`;
  return null;
}

/** Apply a committed change at `slot`. Deterministic: every replica computes the same result. */
export function applyMembershipChange(
  state: MembershipState,
  change: MembershipChange,
  slot: number,
  activationDelay: number = limits.pipelineDepth,
): { state: MembershipState; result: MembershipResult } {
  const problem = membershipChangeProblem(state, change, slot);
  if (problem !== null) return { state, result: { status: "rejected", reason: problem } };
  const latest = latestConfiguration(state);
  let members = latest.members.filter((m) => change.remove === null || !nodeIdEquals(m, change.remove));
  let nextIncarnation = state.nextIncarnation;
  let added: NodeId | null = null;
  if (change.add !== null) {
    added = { serverId: change.add, incarnation: nextIncarnation };
    nextIncarnation += 1;
    members = [...members, added];
  }
  const epoch = state.epoch + 1;
  const fromSlot = slot + activationDelay;
  const configurations = [...state.configurations, { fromSlot, epoch, members }];
  return {
    state: { epoch, nextIncarnation, configurations },
    result: { status: "applied", epoch, added, fromSlot },
  };
}

/** Drop configurations that no slot after `applied` can be governed by. */
export function pruneMembership(state: MembershipState, applied: number): MembershipState {
  let drop = 0;
  const configurations = state.configurations;
  while (
    drop + 1 < configurations.length &&
    (configurations[drop + 1] as Configuration).fromSlot <= applied + 1
  ) {
    drop += 1;
  }
  return drop === 0 ? state : { ...state, configurations: configurations.slice(drop) };
}

/**
 * Shares equal membership states between the nodes of one server. A state is immutable, and the
 * nodes of cells placed on the same servers hold equal ones: sharing them saves a few hundred
 * bytes per resident node (docs/BENCHMARK-LOG.md, `idle`). Bounded: when the table is full it is
 * emptied and fills again with the states in use; states already handed out stay valid.
 */
export class MembershipInterner {
  private readonly table = new Map<string, MembershipState>();
  private readonly max: number;

  constructor(max: number = limits.internedMembershipsMax) {
    assert(max >= 1, "the membership table holds at least one state");
    this.max = max;
  }

  get size(): number {
    return this.table.size;
  }

  /** The shared state equal to `state` (the first one seen), or `state` itself. */
  intern(state: MembershipState): MembershipState {
    const key = membershipKey(state);
    const known = this.table.get(key);
    if (known !== undefined) return known;
    if (this.table.size >= this.max) this.table.clear();
    this.table.set(key, state);
    return state;
  }
}

/** Equal exactly for equal states: every field, with each server id prefixed by its length. */
function membershipKey(state: MembershipState): string {
  let key = `${state.epoch}/${state.nextIncarnation}`;
  for (const configuration of state.configurations) {
    key += `/${configuration.fromSlot},${configuration.epoch}`;
    for (const m of configuration.members) key += `,${m.incarnation}@${m.serverId.length}:${m.serverId}`;
  }
  return key;
}
