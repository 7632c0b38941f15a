/**
 * Every bound in the system lives here, with the relations between bounds asserted at load.
 * Names carry their unit last. Changing a value here is a protocol decision: read
 * docs/PROTOCOL.md ("Limits") before doing so.
 */
import { assert } from "./assert.ts";

export const limits = Object.freeze({
  // ---- data model (docs/PROTOCOL.md, "Items and transactions")
  /** Bytes of an item key (UTF-8). */
  itemKeyBytesMax: 256,
  /** Bytes of a byte-array value, and of the magnitude of an integer value. */
  itemValueBytesMax: 4096,
  /** Encoded bytes of all items and leases of one cell. */
  cellBytesMax: 65536,
  /** Distinct items a transaction may name across conditions, reads and writes. */
  transactionItemsMax: 64,
  /** Encoded bytes of one transaction. */
  transactionBytesMax: 72 * 1024,
  /** Bytes of a cell key (the partition key). */
  cellKeyBytesMax: 128,
  /** Bytes of a lease name and of a lease holder. */
  leaseNameBytesMax: 256,
  /** Longest lease a client may ask for. */
  leaseDurationMsMax: 10 * 60 * 1000,
  /** Shortest lease a client may ask for. */
  leaseDurationMsMin: 10,

  // ---- exactly-once (docs/PROTOCOL.md, "Sessions")
  /** Client sessions remembered per cell; the least recently used is evicted past this. */
  sessionsPerCellMax: 128,
  /** Encoded bytes of a result kept for a retry; larger results are kept without read values. */
  sessionResultBytesMax: 1024,
  /**
   * A session idle for this long (by the cell's stamped time) may be evicted to make room.
   * Must exceed a client's whole retry window several times over (clocks may differ 3x in rate).
   */
  sessionRetentionMs: 60_000,

  // ---- replication (docs/PROTOCOL.md, "Replication")
  /** Default members of a cell. */
  cellSizeDefault: 7,
  /** Largest membership, including the one extra node of a cell stretched during a move. */
  membersMax: 10,
  /**
   * Pipeline depth: slots in flight, and the delay before a membership change takes effect. New
   * requests take a second slot only as a full batch; otherwise they wait for the slot in flight.
   */
  pipelineDepth: 3,
  /** Commands batched into one slot. */
  batchCommandsMax: 32,
  /** Encoded bytes of the commands batched into one slot. */
  batchBytesMax: 128 * 1024,
  /** Requests a node queues for its cell while the pipeline is full or an election runs. */
  pendingRequestsPerCellMax: 256,
  /**
   * Applied entries a leader keeps in memory to serve catch-up by log segment (other nodes keep
   * none); older applied entries stay on disk until the next snapshot, and a node further behind
   * gets a snapshot. Twice the pipeline and more covers a follower that missed a few accepts;
   * keeping more costs every busy leader memory and, as entries then outlive the young
   * generation, garbage collection.
   */
  logMemoryEntries: 8,
  /** Applied entries between snapshots. */
  snapshotIntervalEntries: 64,
  /**
   * The unit of how far ahead of its applied index a node takes entries: an accept more than 4
   * times this beyond is not voted for (the node catches up instead), and a node keeps accepted
   * entries up to 4 times this beyond its commit index. Also bounds a catch-up segment. (Applied
   * entries are not kept: a follower drops each once applied, a leader keeps its last 8.)
   */
  logRetainedEntries: 128,
  /** Entries in one catch-up segment message. */
  catchUpSegmentEntriesMax: 64,
  /**
   * A log slot or snapshot index beyond any a cell reaches (2^48: 8,900 years at a million writes
   * a second); a message claiming one is ignored, so sums of slots stay exact integers.
   */
  slotMax: 2 ** 48,
  /** Linearizable reads waiting on one leader. */
  pendingReadsPerCellMax: 256,

  // ---- timing, in milliseconds of the server's clock
  /**
   * A leader that has nothing left in flight tells followers the commit index after this delay,
   * unless a new accept (which carries it) goes out first. Saves a message round per commit
   * whenever the next write comes within the delay (a client writing one value after another,
   * a busy cell); followers of a cell that went quiet apply its last commit this much later.
   */
  commitNoticeDelayMs: 10,
  /**
   * Followers beyond a majority that a leader sends each accept to at once. The others receive
   * their accepts batched, acceptDeferMs later (or sooner: before any heartbeat or commit notice
   * that tells them a commit index covering those slots): a write then wakes only the followers
   * its commit waits for. 0: the commit waits for the slowest follower of a majority, and a
   * follower that does not answer delays it by acceptDeferMs, after which the others vote.
   */
  acceptSpareFollowers: 0,
  /**
   * How long a leader holds the accepts of followers outside the majority it sends to at once.
   * Longer holds wake those followers less often: one client's writes on a 7-process colony cost
   * 0.86-0.89 times the server CPU with 40 ms than with 10 ms, at 0.94-0.95 times the p50; under
   * the throughput load the two give the same writes/s (docs/BENCHMARK-LOG.md). Below retransmitMs
   * (asserted), so a deferred accept always leaves before any retransmission could.
   */
  acceptDeferMs: 40,
  /** Slots a leader holds for those followers before it sends them anyway. */
  deferredSlotsMax: 32,
  /**
   * Retransmit an unanswered accept, prepare or commit after this; a leader waits three smoothed
   * round trips of its accepts when that is longer, up to retransmitMsMax.
   */
  retransmitMs: 50,
  retransmitMsMax: 1000,
  /** Give up on a phase and back off after this many retransmissions. */
  retransmitsMax: 6,
  /** Election backoff: the first backoff is drawn from [min, 2*min], doubling up to max. */
  electionBackoffMsMin: 20,
  electionBackoffMsMax: 640,
  /**
   * A request saying the cell's leader is unresponsive makes a node campaign only if no accept or
   * heartbeat of a leader, nor prepare of a candidate, reached the node for this long (the leader
   * is slow, not gone, or a campaign is under way, otherwise): the failure detector's suspicion
   * window, the time a server is given before it is thought gone.
   */
  leaderSilenceMs: 1200,
  /** Forwarding pointer kept by a removed node. */
  forwardingPointerMs: 60 * 60 * 1000,

  // ---- failure detector (per server pair)
  heartbeatIntervalMs: 300,
  suspectAfterMs: 1200,
  /**
   * How long a server remembers how late its own timers ran (the longest lateness within the
   * last one to two of these). While it does, it gives its peers and its cells' proposers that much
   * longer, up to leaderSilenceMs more, before their silence counts (Server.silenceAllowanceMs).
   */
  ownLatenessMemoryMs: 5000,

  // ---- server
  /**
   * Servers a failure detector remembers hearing from. Past it, those silent for a suspicion
   * period are forgotten (they were suspected, and stay so); if none is, a new name is not kept.
   */
  detectorServersMax: 16_384,
  /** Distinct membership states a server shares between its nodes (MembershipInterner). */
  internedMembershipsMax: 10_000,
  /** Messages a server accepts in one turn before answering `overloaded`. */
  serverInboxMax: 100_000,
  /** Client requests a server holds at once. */
  serverClientRequestsMax: 50_000,
  /**
   * Bytes of the commands and read transactions those requests hold, as encoded: without it,
   * 50,000 transactions of the largest size would hold about 3.6 GB. Past it, requests are
   * answered `overloaded` until some are answered.
   */
  serverClientRequestBytesMax: 128 * 1024 * 1024,
  /** A request the cell has not answered after this long is forgotten (its client gave up long ago). */
  serverRequestExpiryMs: 10_000,
  /**
   * Requests a follower relays at once to a leader its client cannot reach (PROTOCOL.md section
   * 4); past this it redirects, as without relays.
   */
  serverRelaysMax: 10_000,
  /** A relayed request whose leader has not answered after this long is forgotten. */
  serverRelayExpiryMs: 10_000,
  /**
   * A follower relays only while its cell's proposer was heard this recently: a leader cut off
   * from the follower as well goes silent, and relays to it would be lost until the silence
   * counts (leaderSilenceMs); after this the follower redirects instead, as without relays.
   */
  relayProposerHeardMs: 500,
  /**
   * A node quiet (no timer, no request, no write in flight) and untouched this long is evicted
   * from memory; it is loaded again from storage when its cell is next touched.
   */
  residentIdleMs: 60_000,
  /** Resident nodes the eviction sweep looks at per failure-detector interval (bounds its cost). */
  residentSweepNodesPerInterval: 15_000,
  /** Granularity of the timer wheel. */
  timerWheelSlotMs: 5,
  /** Slots of the timer wheel; later deadlines are kept in an overflow list. */
  timerWheelSlots: 512,

  // ---- client
  /** Attempts of one operation that may fail without a redirect (a timeout, an error, a lost connection). */
  clientAttemptsMax: 12,
  /**
   * Redirects one operation follows. A redirect is an answer: nodes of a cell that is electing a
   * leader, or whose leadership moves under load, keep pointing elsewhere for a while, and an
   * operation that counted them as failed attempts would give up (its outcome unknown, for a
   * write) within a second or two. Every third one in a row waits a backoff, so the operation's
   * time (clientOperationMsMax) usually ends a redirect storm first.
   */
  clientRedirectsMax: 64,
  clientBackoffMsBase: 10,
  clientBackoffMsMax: 1000,
  /**
   * An attempt that has no answer after this long is given up and the operation tried again,
   * elsewhere if the node seems gone. The client times every answered attempt and waits longer
   * when answers are slow (a smoothed answer time plus four deviations, as TCP times its
   * retransmissions): a colony that is merely loaded is then not sent a second copy of each
   * request, nor told its leaders are unresponsive, which would bring elections on top of the load.
   * Each unanswered attempt of an operation doubles the wait of its next, up to the ceiling.
   */
  clientRequestTimeoutMs: 400,
  /**
   * Times an attempt's deadline moves on, each by a doubled wait, while the server it was sent to
   * goes on answering other writes of its cell: a busy leader, not an unresponsive one (the
   * client's expireAttempts). Three moves wait up to 15 times the attempt timeout in all.
   */
  clientAttemptExtensionsMax: 3,
  /**
   * Times an operation's attempt at its cell's leader waits once more, by a doubled wait, only
   * because that leader's server answers other requests meanwhile (up, reachable, and likely
   * busy), before the next timeout sends the operation around the leader (the client's
   * leaderOnlySlow).
   */
  clientSlowLeaderWaitsMax: 1,
  /** The longest an attempt is waited for, however slow the answers. */
  clientRequestTimeoutMsMax: 4000,
  /**
   * After an attempt at a cell's leader goes unanswered, and that server answered nothing since
   * the attempt left, the client sends that cell's requests through the other nodes, each marked
   * `leaderUnresponsive`, this long (or until that server answers anything): a node that still
   * hears the leader relays them to it, one that does not takes over. Then it tries the leader again.
   */
  clientLeaderDetourMs: 5000,
  /** An operation makes no new attempt this long after its first (it ends unavailable, or unknown). */
  clientOperationMsMax: 16_000,
  /** Cells whose sessions a client remembers; the least recently used is forgotten past this. */
  clientCellsMax: 100_000,
  /**
   * Operations one client has outstanding (sent, or waiting for a session); past this a new one
   * fails at once, unavailable. Below clientCellsMax, so the cells a client remembers always
   * include an idle one to forget.
   */
  clientOperationsMax: 65_536,
  /** Sessions a client opens to one cell (its concurrency towards that cell). */
  clientSessionsPerCellMax: 16,

  // ---- wire
  /** Encoded bytes of one message. */
  messageBytesMax: 1024 * 1024,
});

export type Limits = typeof limits;

assert(limits.itemValueBytesMax <= limits.cellBytesMax, "an item value must fit in a cell");
assert(limits.transactionBytesMax >= limits.cellBytesMax, "a transaction must be able to fill a cell");
assert(limits.batchBytesMax >= limits.transactionBytesMax, "a batch must hold the largest transaction");
assert(
  limits.messageBytesMax >= limits.batchBytesMax * limits.pipelineDepth,
  "a message must hold a full pipeline",
);
assert(
  limits.messageBytesMax >= limits.cellBytesMax * 4,
  "a snapshot message must hold a full cell with its sessions",
);
assert(limits.logRetainedEntries >= limits.snapshotIntervalEntries, "the log must cover a snapshot interval");
assert(limits.catchUpSegmentEntriesMax <= limits.logRetainedEntries, "a segment comes from the retained log");
assert(limits.membersMax >= limits.cellSizeDefault + 1, "a cell must be able to stretch by one node");
assert(
  limits.clientOperationsMax < limits.clientCellsMax,
  "a client's outstanding operations leave a cell it remembers idle",
);
assert(limits.commitNoticeDelayMs < limits.retransmitMs, "the commit notice comes before any retransmission");
assert(limits.acceptDeferMs < limits.retransmitMs, "deferred accepts go out before any retransmission");
assert(limits.deferredSlotsMax >= 1, "a leader holds at least one deferred slot");
assert(limits.pipelineDepth >= 1, "the pipeline holds at least one slot");
assert(
  limits.logMemoryEntries >= 2 * limits.pipelineDepth,
  "a follower a pipeline or two behind catches up from memory",
);
assert(limits.electionBackoffMsMax >= limits.electionBackoffMsMin * 2, "backoff must be able to grow");
assert(limits.suspectAfterMs >= limits.heartbeatIntervalMs * 3, "suspicion needs several missed heartbeats");
assert(
  limits.residentIdleMs >= limits.leaderSilenceMs * 10,
  "a node is evicted only long after its cell went quiet",
);
assert(
  limits.sessionRetentionMs >= 3 * (limits.clientOperationMsMax + limits.clientRequestTimeoutMsMax),
  "a session must outlive every retry of its last request, with a 3x clock-rate margin",
);
assert(
  limits.relayProposerHeardMs < limits.leaderSilenceMs,
  "a follower stops relaying to a silent proposer before it may take its cell over",
);
assert(
  limits.clientRequestTimeoutMsMax >= limits.clientRequestTimeoutMs,
  "the longest attempt timeout is at least the shortest",
);
assert(limits.leaseDurationMsMin < limits.leaseDurationMsMax, "lease bounds are ordered");
