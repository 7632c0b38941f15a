/**
 * Failure detection per server pair: every server sends each peer one heartbeat per interval,
 * carrying no per-cell data, and suspects a peer it has not heard from for `suspectAfterMs`.
 * Any message from a peer counts as hearing from it. A peer whose address refused a connection
 * (its process is gone: the transport dials again at once when a connection is lost) is
 * suspected at once, until it is heard from again. A change of opinion wakes no cell: cells
 * consult the detector only when they have work.
 */
import { limits, type ServerId } from "../core/index.ts";

export class FailureDetector {
  private readonly lastHeardMs = new Map<ServerId, number>();
  /** Peers that refused a connection since they were last heard from. */
  private readonly refusedPeers = new Set<ServerId>();

  constructor(
    private readonly self: ServerId,
    private readonly startedMs: number,
  ) {}

  heard(serverId: ServerId, nowMs: number): void {
    const previous = this.lastHeardMs.get(serverId);
    if (previous === undefined || nowMs > previous) this.lastHeardMs.set(serverId, nowMs);
    this.refusedPeers.delete(serverId);
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
