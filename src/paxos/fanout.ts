/**
 * Which followers a leader sends each accept to at once, and the accepts it holds for the others
 * (docs/PROTOCOL.md section 5, "Who gets an accept at once"). One per proposer; pure bookkeeping:
 * the replica sends what `release` hands it and decides when.
 *
 * Members are named by their index in the slot's configuration (bit i: members[i]); a
 * configuration has at most limits.membersMax members, so a bit set fits in a number.
 */
import { limits, type NodeId, nodeIdEquals, type ServerId } from "../core/index.ts";
import { majority } from "./membership.ts";

/** A proposal whose accept some followers have not been sent yet. */
export interface HeldAccept<V> {
  readonly slot: number;
  readonly value: V;
  readonly targets: readonly NodeId[];
}

export class AcceptFanout<V> {
  /** Held accepts in slot order. Entries are never changed, only added and released. */
  private readonly held: HeldAccept<V>[] = [];
  /** Every follower some held accept is addressed to, once each (at most a configuration's members). */
  private readonly heldTargets: NodeId[] = [];
  /** When the held accepts must go (Infinity: none held). */
  releaseAtMs = Number.POSITIVE_INFINITY;
  /**
   * Followers that had not voted when a slot sent to them at once committed, oldest first: taken
   * only when the others are too few. As many as can be deferred; one more demotion restores the
   * oldest.
   */
  private demoted: NodeId[] = [];
  /**
   * A slot committed without the leader's own vote but with a deferred follower's (its disk is
   * slower than its followers'): one more follower gets each accept at once, until a slot commits
   * with the leader's vote in.
   */
  private ownVoteLate = false;

  /** `spares`: followers beyond a majority sent each accept at once. */
  constructor(private readonly spares: number) {}

  /** An independent copy (for the explorer). */
  copy(): AcceptFanout<V> {
    const copy = new AcceptFanout<V>(this.spares);
    copy.held.push(...this.held);
    copy.heldTargets.push(...this.heldTargets);
    copy.releaseAtMs = this.releaseAtMs;
    copy.demoted = [...this.demoted];
    copy.ownVoteLate = this.ownVoteLate;
    return copy;
  }

  /** Everything that shapes what it does next, for fingerprints. */
  describe(describeNode: (node: NodeId) => string): string {
    const held = this.held.map((h) => `${h.slot}>${h.targets.map(describeNode).join("+")}`).join(",");
    return `${held}:${this.demoted.map(describeNode).join(",")}:${this.ownVoteLate ? 1 : 0}`;
  }

  /**
   * The followers a proposal goes to at once: as many as make a majority with the leader's own
   * vote (`own`: its index, -1 if it is not a member), plus the spares. They are taken in turn
   * from the leader's place, so the cells of a colony placed on the same servers defer different
   * ones; live ones only, and demoted ones only when the others are too few.
   */
  atOnce(
    members: readonly NodeId[],
    own: number,
    detector: { isServerAlive(serverId: ServerId): boolean },
  ): number {
    const count = members.length;
    let wanted = majority(count) - (own >= 0 && !this.ownVoteLate ? 1 : 0) + this.spares;
    let chosen = 0;
    for (let pass = 0; pass < 2 && wanted > 0; pass++) {
      for (let k = 1; k <= count && wanted > 0; k++) {
        const i = (own + k + count) % count;
        if (i === own || (chosen & (1 << i)) !== 0) continue;
        const member = members[i] as NodeId;
        if (pass === 0 && this.isDemoted(member)) continue;
        if (!detector.isServerAlive(member.serverId)) continue;
        chosen |= 1 << i;
        wanted -= 1;
      }
    }
    return chosen;
  }

  /** Whether a held accept is addressed to `member` (it must get those before a newer one). */
  holdsFor(member: NodeId): boolean {
    for (const target of this.heldTargets) if (nodeIdEquals(target, member)) return true;
    return false;
  }

  /** Whether holding one more slot would pass limits.deferredSlotsMax (release first). */
  full(): boolean {
    return this.held.length >= limits.deferredSlotsMax;
  }

  hold(slot: number, value: V, targets: readonly NodeId[], nowMs: number): void {
    this.held.push({ slot, value, targets });
    for (const target of targets) if (!this.holdsFor(target)) this.heldTargets.push(target);
    this.releaseAtMs = Math.min(this.releaseAtMs, nowMs + limits.acceptDeferMs);
  }

  /** Hands every held accept to `send`, in slot order, and holds nothing after. */
  release(send: (held: HeldAccept<V>) => void): void {
    this.releaseAtMs = Number.POSITIVE_INFINITY;
    for (const h of this.held) send(h);
    this.held.length = 0;
    this.heldTargets.length = 0;
  }

  /**
   * A slot committed with `votes`; `sentAtOnce` is what atOnce gave it. Followers sent it at once
   * that had not voted are demoted; the leader's own vote (index `own`) decides ownVoteLate.
   */
  committed(members: readonly NodeId[], own: number, sentAtOnce: number, votes: number): void {
    const missed = sentAtOnce & ~votes;
    if (missed !== 0) {
      for (let i = 0; i < members.length; i++) {
        const member = members[i] as NodeId;
        if ((missed & (1 << i)) !== 0 && !this.isDemoted(member)) this.demoted.push(member);
      }
      const deferrable = Math.max(0, members.length - majority(members.length) - this.spares);
      while (this.demoted.length > deferrable) this.demoted.shift();
    }
    if (own < 0) return;
    const ownBit = 1 << own;
    if ((votes & ownBit) !== 0) this.ownVoteLate = false;
    else if ((votes & ~sentAtOnce & ~ownBit) !== 0) this.ownVoteLate = true;
  }

  private isDemoted(member: NodeId): boolean {
    for (const demoted of this.demoted) if (nodeIdEquals(demoted, member)) return true;
    return false;
  }
}
