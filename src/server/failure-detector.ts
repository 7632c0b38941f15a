/**
 * Failure detection per server pair: every server sends each peer one heartbeat per interval,
 * carrying no per-cell data, and suspects a peer it has not heard from for `suspectAfterMs`.
 * Any message from a peer counts as hearing from it. A peer whose address refused a connection
 * (its process is gone: the transport dials again at once when a connection is lost) is
 * suspected at once, until it is heard from again. A change of opinion wakes no cell: cells
 * consult the detector only when they have work. It remembers at most `serversMax` servers, so
 * messages naming ever new senders cannot grow it without bound.
 */
import { limits, type ServerId } from "../core/index.ts";

export class FailureDetector {
  private readonly lastHeardMs = new Map<ServerId, number>();
  /** Peers that refused a connection since they were last heard from. */
  private readonly refusedPeers = new Set<ServerId>();

  /** When silent servers were last forgotten to make room; at most once per suspicion period. */
  private sweptMs = Number.NEGATIVE_INFINITY;
  /** Servers heard from but not remembered, the table being full of servers heard lately. */
  notRemembered = 0;

  constructor(
    private readonly self: ServerId,
    private readonly startedMs: number,
    private readonly serversMax: number = limits.detectorServersMax,
  ) {}

  heard(serverId: ServerId, nowMs: number): void {
    const previous = this.lastHeardMs.get(serverId);
    if (previous === undefined) {
      if (this.lastHeardMs.size >= this.serversMax && !this.makeRoom(nowMs)) {
        this.notRemembered += 1;
        return;
      }
      this.lastHeardMs.set(serverId, nowMs);
    } else if (nowMs > previous) {
      this.lastHeardMs.set(serverId, nowMs);
    }
    this.refusedPeers.delete(serverId);
  }

  /** Servers it holds a time for; at most serversMax. */
  get remembered(): number {
    return this.lastHeardMs.size;
  }

  /**
   * Forgets servers silent for a suspicion period: forgotten, each is still suspected (its last
   * time and the start are both that old). Swept at most once a period, so a flood of new names
   * does not cost a scan each.
   */
  private makeRoom(nowMs: number): boolean {
    if (nowMs - this.sweptMs >= limits.suspectAfterMs) {
      this.sweptMs = nowMs;
      for (const [serverId, lastMs] of this.lastHeardMs) {
        if (nowMs - lastMs >= limits.suspectAfterMs && nowMs - this.startedMs >= limits.suspectAfterMs) {
          this.lastHeardMs.delete(serverId);
          this.refusedPeers.delete(serverId);
        }
      }
    }
    return this.lastHeardMs.size < this.serversMax;
  }

  /** A connection to the peer was refused: suspected until heard from again. */
  refused(serverId: ServerId): void {
    if (serverId !== this.self && this.lastHeardMs.has(serverId)) this.refusedPeers.add(serverId);
  }

  /** Peers never heard from are given the benefit of the doubt until one suspicion period passed. */
  isAlive(serverId: ServerId, nowMs: number): boolean {
    if (serverId === this.self) return true;
    if (this.refusedPeers.has(serverId)) return false;
    const last = this.lastHeardMs.get(serverId) ?? this.startedMs;
    return nowMs - last < limits.suspectAfterMs;
  }

  suspected(peers: readonly ServerId[], nowMs: number): ServerId[] {
    return peers.filter((peer) => !this.isAlive(peer, nowMs));
  }
}
