/**
 * One server of a colony on real adapters: lmdb storage, TCP transport under the colony key,
 * Node timers, and an admin HTTP port serving /healthz, /metrics, /status and the cell list, and
 * taking cell creation from the colony's tools. `physalia server` runs one; `physalia up` runs
 * several in one process or one per process.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { type Command, commandCodec } from "../cell/index.ts";
import { type ColonyKeys, NodeScheduler } from "../client/index.ts";
import { cellKeyProblem, limits, type NodeId, Prng } from "../core/index.ts";
import { initialMembersProblem } from "../paxos/index.ts";
import { Server, type ServerMessage, serverMessageCodec, timerLatenessBucketsMs } from "../server/index.ts";
import {
  checkpointBucketsMs,
  claimDataDirectory,
  diskLowWarning,
  diskSpaceNote,
  freeBytes,
  LmdbStorage,
  lockDataDirectory,
  refuseOthersDirectory,
} from "../storage/index.ts";
import {
  AddressBook,
  formatServerAddress,
  listenAdvice,
  MappedTransport,
  onServerLost,
  TcpTransport,
} from "../transport/index.ts";
import { adminHttpServer, readJsonBody, reply } from "./admin-http.ts";
import { adminToken, adminUrl, keyFingerprint, type ServerConfig, type Topology } from "./colony.ts";

export { adminToken };

import type { Logger } from "./log.ts";
import { counter, formatMetrics, gauge, labeledCounter, type Metric, secondsHistogram } from "./metrics.ts";
import { processCollector } from "./process-collector.ts";

/** Checkpoints run on a worker thread started from this module (built: .js; from the sources: .ts). */
export const checkpointWorkerModule = new URL(
  import.meta.url.endsWith(".ts") ? "./checkpoint-worker.ts" : "./checkpoint-worker.js",
  import.meta.url,
);

export function addressBook(topology: Topology): AddressBook {
  return new AddressBook(topology.servers.map((s) => [s.id, formatServerAddress(s.host, s.port)] as const));
}

export interface RunningServer {
  readonly serverId: string;
  readonly server: Server;
  readonly adminUrl: string;
  readonly address: string;
  /**
   * Takes new colony keys for every frame and admin request from now on (a rotation without a
   * restart, docs/OPERATIONS.md section 1.4); throws a RangeError, keeping the old ones, if
   * they cannot be used.
   */
  reloadKeys(keys: ColonyKeys): void;
  close(): Promise<void>;
}

/** Request bodies on the admin port are JSON documents up to this size. */
/** Connections to the admin port at once: one more displaces the longest idle (admin-http.ts). */
const adminConnectionsMax = 256;
const adminBodyBytesMax = 1024 * 1024;
/** How long a request creating cells waits for room among the storage's pending changes. */
const adminCheckpointWaitMsMax = 30_000;
const adminCheckpointPollMs = 10;
/** Cells one creation request may carry. */
const createCellsMax = 1000;
/** How often a server looks at its disk's free space, and how often it warns while it is low. */
const diskCheckIntervalMs = 10_000;
const diskWarnIntervalMs = 60_000;
/** The admin port's paths and the methods each takes (another method is answered 405). */
const adminMethods: ReadonlyMap<string, readonly string[]> = new Map([
  ["/healthz", ["GET"]],
  ["/metrics", ["GET"]],
  ["/status", ["GET"]],
  ["/cells", ["GET", "POST"]],
]);
/** Cell keys listed per /cells page. */
const cellsPageMax = 10_000;
/** GET /status counts hosted nodes exactly at most this often (the count makes lmdb catch up first). */
const hostedCountIntervalMs = 1000;

/** The server of the first node stored in `storage`, or null when it stores none. */
function firstStoredServer(storage: LmdbStorage<Command>): string | null {
  for (const cellKey of storage.hostedCellsPage("", 1)) {
    const loaded = storage.load(cellKey);
    if (loaded.status === "found") return loaded.node.node.serverId;
  }
  return null;
}

export async function startServer(options: {
  readonly config: ServerConfig;
  /** The key that tags what the server sends, and while the key is rotated the other one it accepts. */
  readonly colonyKeys: ColonyKeys;
  readonly logger: Logger;
  /** Called if the server stops itself (its disk failed); the process should exit. */
  readonly onFatal?: (reason: string) => void;
}): Promise<RunningServer> {
  const { config, colonyKeys, logger } = options;
  const self = config.topology.servers.find((s) => s.id === config.server);
  if (self === undefined) throw new Error(`server ${config.server} is not in the topology`);
  const startedMs = Date.now();
  // Before anything in the directory is read: no other server process may be using it.
  const lock = await lockDataDirectory(config.data);
  let storage: LmdbStorage<Command>;
  let claimed: boolean;
  try {
    // Another server's directory is refused before its journal is replayed (docs/OPERATIONS.md
    // section 1.3, "One data directory, one server").
    claimed = refuseOthersDirectory(config.data, self.id);
    storage = await LmdbStorage.open({
      path: config.data,
      codec: commandCodec,
      checkpointWorker: checkpointWorkerModule,
    });
  } catch (error) {
    await lock.release();
    // Replaying the journal into lmdb on a full disk fails as lmdb's "Input/output error".
    const note = diskSpaceNote(config.data, { onlyWhenFull: true });
    if (note === "") throw error;
    throw new Error(`${(error as Error).message}${note}`, { cause: error });
  }
  /** The storage closed, then the directory let go, whatever closing the storage did. */
  const closeStorage = async (): Promise<void> => {
    try {
      await storage.close();
    } finally {
      await lock.release();
    }
  };
  try {
    // A directory without its server-id file yet: new, or made by an earlier build.
    if (!claimed) claimDataDirectory(config.data, self.id, () => firstStoredServer(storage));
  } catch (error) {
    await closeStorage();
    throw error;
  }
  const tcp = new TcpTransport<ServerMessage>({
    listen: { host: self.host, port: self.port },
    colonyKey: colonyKeys.signing,
    alsoAcceptedKeys: colonyKeys.alsoAccepted,
    codec: serverMessageCodec,
    warn: (message, fields) => logger.log("warn", message, fields as Record<string, string | number>),
  });
  try {
    await tcp.start();
  } catch (error) {
    await closeStorage();
    throw error;
  }
  const book = addressBook(config.topology);
  const transport = new MappedTransport(tcp, book);
  const server = new Server({
    serverId: self.id,
    peers: config.topology.servers.map((s) => s.id),
    storage,
    transport,
    scheduler: new NodeScheduler(true),
    random: Prng.fromBytes(randomBytes(16)),
    ...(config.residentIdleSeconds === undefined
      ? {}
      : { residentIdleMs: config.residentIdleSeconds * 1000 }),
    onFault: (cellKey, detail) =>
      logger.log("error", "stored node failed its checksum; rebuilding it as a learner", {
        cell: cellKey,
        detail,
      }),
    onFatal: (reason) => {
      logger.log("error", "server stopped", { reason });
      options.onFatal?.(reason);
    },
  });
  onServerLost(tcp, book, (serverId, refused) => {
    if (refused) server.peerRefused(serverId);
  });
  // A token derived from either key is taken while the key is rotated.
  const keyring = (keys: ColonyKeys) => {
    const all = [keys.signing, ...keys.alsoAccepted];
    return { tokens: all.map((key) => Buffer.from(adminToken(key))), fingerprints: all.map(keyFingerprint) };
  };
  let { tokens, fingerprints: keyFingerprints } = keyring(colonyKeys);
  // GET /status counts hosted nodes exactly, which makes lmdb catch up with the journal on the
  // event loop first; the admin port needs no token for it, so the count is taken at most once
  // a second, however often /status is asked (metrics use the checkpointed count, never this).
  let hostedCounted: { count: number; atMs: number } | null = null;
  const hostedNodes = (): number => {
    const now = performance.now();
    if (hostedCounted === null || now - hostedCounted.atMs >= hostedCountIntervalMs) {
      hostedCounted = { count: storage.hostedCount(), atMs: now };
    }
    return hostedCounted.count;
  };

  const metrics = (): Metric[] => {
    const status = server.status();
    const counters = status.counters;
    const transportStats = tcp.stats();
    const storageStats = storage.stats();
    const free = freeBytes(config.data);
    const memory = process.memoryUsage();
    const cpu = process.cpuUsage();
    return [
      gauge("physalia_resident_nodes", "Nodes of cells held in memory on this server", status.residentNodes),
      // As of the last checkpoint: an exact count would make lmdb catch up first, on the event
      // loop, at every scrape (for seconds during a burst of new cells).
      gauge(
        "physalia_hosted_nodes",
        "Nodes of cells stored on this server, as of the last checkpoint (at most a few seconds old)",
        storageStats.hostedNodes,
      ),
      gauge("physalia_leaders", "Resident nodes that lead their cell", status.leaders),
      gauge("physalia_armed_timers", "Nodes with an armed timer", status.armedTimers),
      gauge("physalia_pending_requests", "Client requests waiting for their cell", status.pendingRequests),
      gauge(
        "physalia_pending_request_bytes",
        "Bytes of the commands and reads those requests hold, as encoded",
        status.pendingRequestBytes,
      ),
      gauge(
        "physalia_stalled_cells",
        "Cells stalled on an entry this build cannot apply",
        status.stalledCount,
      ),
      gauge(
        "physalia_faulty_nodes",
        "Nodes whose stored state failed its checksum (non-voting learners)",
        status.faultyCount,
      ),
      counter("physalia_nodes_evicted_total", "Quiet nodes evicted from memory", counters.nodesEvicted),
      gauge("physalia_suspected_peers", "Peers the failure detector suspects", status.suspectedPeers.length),
      counter("physalia_turns_total", "Event-loop turns that ran cells", counters.turns),
      counter(
        "physalia_storage_batches_total",
        "Durable storage batches (one fsync each)",
        counters.storageBatches,
      ),
      counter("physalia_messages_in_total", "Messages received", counters.messagesIn),
      counter("physalia_messages_out_total", "Messages sent", counters.messagesOut),
      labeledCounter(
        "physalia_paxos_messages_out_total",
        "Messages the server's nodes sent to other nodes, by kind (commit_notice: a heartbeat of round 0)",
        "kind",
        counters.paxosOut,
      ),
      counter(
        "physalia_requests_overloaded_total",
        "Requests answered overloaded",
        counters.requestsOverloaded,
      ),
      counter(
        "physalia_takeovers_declined_total",
        "Requests saying a cell's leader was unresponsive, relayed or redirected to it because a leader or candidate had just been heard",
        counters.takeoversDeclined,
      ),
      counter(
        "physalia_requests_relayed_total",
        "Requests relayed to their cell's leader for a client that could not reach it",
        counters.requestsRelayed,
      ),
      counter(
        "physalia_relay_answers_total",
        "Leaders' answers to relayed requests passed back to their clients",
        counters.relayAnswers,
      ),
      counter(
        "physalia_relays_expired_total",
        "Relayed requests their leader never answered, forgotten after 10 s",
        counters.relaysExpired,
      ),
      labeledCounter(
        "physalia_campaigns_total",
        "Campaigns (elections) the server's nodes started, by cause: no_leader, leader_suspected (its server suspected), takeover (a client said the leader was unresponsive), after_backoff (requests waited out its backoff after a failed or preempted campaign), transfer, caught_up (a leader elected while behind stepped down to take a peer's snapshot, and campaigned again)",
        "cause",
        counters.campaigns,
      ),
      counter(
        "physalia_leaderships_won_total",
        "Campaigns the server's nodes won (each a new leader for its cell)",
        counters.leadershipsWon,
      ),
      counter("physalia_messages_dropped_total", "Messages dropped by the server", counters.messagesDropped),
      counter("physalia_timer_firings_total", "Timer wheel firings", counters.timerFirings),
      counter("physalia_transport_frames_sent_total", "Frames sent", transportStats.framesSent),
      counter("physalia_transport_frames_received_total", "Frames received", transportStats.framesReceived),
      counter(
        "physalia_transport_frames_received_other_key_total",
        "Frames received tagged with the colony key this server accepts besides its own (a rotation's other key)",
        transportStats.framesReceivedUnderOtherKey,
      ),
      {
        name: "physalia_transport_frames_dropped_total",
        help: "Frames dropped by the transport, by reason",
        kind: "counter",
        samples: Object.entries(transportStats.framesDropped).map(([reason, value]) => ({
          labels: { reason },
          value,
        })),
      },
      {
        name: "physalia_transport_messages_dropped_total",
        help: "Messages the transport dropped, by reason (undecodable-message: a peer's message this build cannot read)",
        kind: "counter",
        samples: Object.entries(transportStats.messagesDropped).map(([reason, value]) => ({
          labels: { reason },
          value,
        })),
      },
      counter(
        "physalia_transport_warnings_suppressed_total",
        "Transport warnings not logged because more than its rate bound came in one second",
        transportStats.warningsSuppressed,
      ),
      counter(
        "physalia_storage_batches_written_total",
        "Storage batches made durable (one flushed journal record each)",
        storageStats.batchesWritten,
      ),
      counter(
        "physalia_storage_batches_failed_total",
        "Storage batches refused or not written",
        storageStats.batchesFailed,
      ),
      gauge(
        "physalia_storage_last_commit_seconds",
        "Latency of the last storage batch, from write to durable",
        storageStats.lastCommitLatencyMs / 1000,
      ),
      counter(
        "physalia_storage_checkpoints_total",
        "Checkpoints of the journal into lmdb",
        storageStats.checkpoints,
      ),
      gauge(
        "physalia_storage_last_checkpoint_seconds",
        "Duration of the last checkpoint, from its start to lmdb's commit on the checkpoint thread (the server goes on meanwhile)",
        storageStats.lastCheckpointMs / 1000,
      ),
      secondsHistogram(
        "physalia_storage_checkpoint_seconds",
        "Durations of checkpoints since the server started, each from its start to lmdb's commit on the checkpoint thread",
        checkpointBucketsMs,
        storageStats.checkpointDurations,
      ),
      gauge(
        "physalia_storage_journal_bytes",
        "Journal bytes written since the last checkpoint",
        storageStats.journalBytes,
      ),
      gauge(
        "physalia_storage_pending_cells",
        "Cells with changes in the journal not yet checkpointed into lmdb, when the scrape arrived (counting hosted nodes then checkpoints them)",
        storageStats.pendingCells,
      ),
      counter(
        "physalia_storage_checkpoint_cells_skipped_corrupt_total",
        "Cells a checkpoint left as they were because their node record failed its checksum",
        storageStats.checkpointCellsSkippedCorrupt,
      ),
      ...(free === null
        ? []
        : [
            gauge(
              "physalia_storage_free_bytes",
              "Bytes the server may still write on the file system holding its data directory (under 64 MiB a storage failure calls the disk full: alert well before)",
              free,
            ),
          ]),
      gauge(
        "physalia_storage_replayed_batches",
        "Journal records replayed into lmdb when the server started (batches a crash left there)",
        storageStats.replayedBatches,
      ),
      gauge("physalia_transport_connections_open", "Open peer connections", transportStats.connectionsOpen),
      gauge(
        "physalia_transport_queued_bytes",
        "Bytes queued for peers whose connections are down or not reading",
        transportStats.queuedBytes,
      ),
      counter(
        "physalia_transport_queues_shed_total",
        "Peer queues dropped whole because all queues together reached their bound (the largest first)",
        transportStats.queuesShed,
      ),
      gauge(
        "physalia_transport_receive_buffered_bytes",
        "Bytes of partly received frames held for all connections",
        transportStats.receiveBufferedBytes,
      ),
      counter(
        "physalia_transport_receive_buffers_shed_total",
        "Connections closed because all partly received frames together reached their bound (the largest first)",
        transportStats.receiveBuffersShed,
      ),
      counter(
        "physalia_transport_client_reads_held_total",
        "Times a client's connection stopped being read because the client was not taking its answers (it is read again once it does)",
        transportStats.clientReadsHeld,
      ),
      counter(
        "physalia_transport_reads_paused_total",
        "Turns in which every connection stopped reading because the turn's bytes reached their bound",
        transportStats.readsPaused,
      ),
      gauge(
        "physalia_transport_send_buffered_bytes",
        "Bytes held in the sockets of connections that stopped reading, for all connections",
        transportStats.sendBufferedBytes,
      ),
      counter(
        "physalia_transport_connections_refused_total",
        "Inbound connections closed on arrival because the most the server takes were open",
        transportStats.connectionsRefused,
      ),
      counter(
        "physalia_transport_hello_timeouts_total",
        "Connections closed because no authenticated hello came in time",
        transportStats.helloTimeouts,
      ),
      counter(
        "physalia_admin_connections_displaced_total",
        "Admin connections closed to make room for a new one (the longest idle first)",
        adminStats.connectionsDisplaced,
      ),
      counter(
        "physalia_admin_connections_refused_total",
        "Admin connections closed on arrival: the most the port takes were open, none idle",
        adminStats.connectionsRefused,
      ),
      counter(
        "physalia_admin_errors_not_logged_total",
        "Failed admin requests not logged, over the most logged a second",
        adminStats.errorsNotLogged,
      ),
      counter(
        "physalia_transport_send_buffers_shed_total",
        "Connections closed because what their sockets held together reached its bound (the largest first)",
        transportStats.sendBuffersShed,
      ),
      gauge("process_resident_memory_bytes", "Resident set size", memory.rss),
      gauge("nodejs_heap_used_bytes", "V8 heap in use", memory.heapUsed),
      gauge("nodejs_heap_total_bytes", "V8 heap reserved", memory.heapTotal),
      counter(
        "physalia_idle_collections_total",
        "Full collections the process asked for once quiet, after its heap had grown or many nodes were evicted",
        processCollector?.collector.collections ?? 0,
      ),
      gauge(
        "physalia_idle_collection_last_seconds",
        "Wall time of the last of those collections, from its start to its end (its pauses are within it)",
        (processCollector?.lastCollectionMs ?? 0) / 1000,
      ),
      gauge(
        "physalia_idle_collection_longest_pause_seconds",
        "Longest pause of the event loop within the last of those collections",
        (processCollector?.lastPauseMs ?? 0) / 1000,
      ),
      secondsHistogram(
        "physalia_timer_lateness_seconds",
        "How late the server's timers ran (its heartbeat tick, its nodes' timers): the delay its event loop adds",
        timerLatenessBucketsMs,
        status.timerLateness,
      ),
      counter("process_cpu_seconds_total", "CPU time of the process", (cpu.user + cpu.system) / 1e6),
      gauge("process_start_time_seconds", "When the server started", startedMs / 1000),
    ];
  };

  const { server: admin, stats: adminStats } = adminHttpServer({
    connectionsMax: adminConnectionsMax,
    handle: handleAdmin,
    logError: (message, fields) => logger.log("error", message, fields),
  });

  const authorized = (request: IncomingMessage): boolean => {
    const header = request.headers.authorization ?? "";
    const presented = Buffer.from(header.startsWith("Bearer ") ? header.slice(7) : "");
    let match = false;
    for (const token of tokens) {
      if (presented.length === token.length && timingSafeEqual(presented, token)) match = true;
    }
    return match;
  };

  async function handleAdmin(request: IncomingMessage, response: ServerResponse, url: URL): Promise<void> {
    if (request.method === "GET" && url.pathname === "/healthz") {
      const healthy = !server.isStopped;
      reply(response, healthy ? 200 : 503, {
        status: healthy ? "ok" : "stopped",
        server: self?.id,
        pid: process.pid,
      });
      return;
    }
    if (request.method === "GET" && url.pathname === "/metrics") {
      reply(response, 200, formatMetrics(metrics()), "text/plain; version=0.0.4");
      return;
    }
    if (request.method === "GET" && url.pathname === "/status") {
      const status = server.status();
      const free = freeBytes(config.data);
      reply(response, 200, {
        server: self?.id,
        address: formatServerAddress(self?.host ?? "", self?.port ?? 0),
        healthy: !server.isStopped,
        hostedNodes: hostedNodes(),
        residentNodes: status.residentNodes,
        leaders: status.leaders,
        pendingRequests: status.pendingRequests,
        stalledCells: status.stalledCells,
        stalledCount: status.stalledCount,
        faultyCells: status.faultyCells,
        faultyCount: status.faultyCount,
        suspectedPeers: status.suspectedPeers,
        uptimeSeconds: Math.round((Date.now() - startedMs) / 1000),
        rssBytes: process.memoryUsage().rss,
        dataFreeBytes: free,
        diskWarning: diskLowWarning(config.data, free),
        colonyKeys: keyFingerprints,
      });
      return;
    }
    if (request.method === "GET" && url.pathname === "/cells") {
      const after = url.searchParams.get("after") ?? "";
      const afterProblem = after === "" ? null : cellKeyProblem(after);
      if (afterProblem !== null) {
        reply(response, 400, { error: `after: ${afterProblem}` });
        return;
      }
      // Every cell created before the request is listed; lmdb catches up while the server goes on.
      await storage.caughtUp();
      const cells = storage.hostedCellsPage(after, cellsPageMax, { settled: true });
      reply(response, 200, { cells, more: cells.length === cellsPageMax });
      return;
    }
    if (request.method === "POST" && url.pathname === "/cells") {
      if (!authorized(request)) {
        reply(response, 401, { error: "this needs the colony's admin token (derived from the colony key)" });
        return;
      }
      const body = await readJsonBody(request, adminBodyBytesMax);
      const cells = (body as { cells?: unknown })?.cells ?? [body];
      if (!Array.isArray(cells) || cells.length === 0 || cells.length > createCellsMax) {
        reply(response, 400, {
          error: `expected {cellKey, members} or {cells: [...]} with 1 to ${createCellsMax} cells`,
        });
        return;
      }
      for (const [index, cell] of cells.entries()) {
        const problem = createProblem(cell);
        if (problem !== null) {
          reply(response, 400, { error: cells.length === 1 ? problem : `cell ${index}: ${problem}` });
          return;
        }
      }
      // A burst of new cells outruns the checkpoints that take their founding nodes into lmdb; had
      // the storage to wait for one, the whole event loop would wait, every cell of this server
      // with it. This request waits instead, while the server goes on.
      const waitUntil = Date.now() + adminCheckpointWaitMsMax;
      while (storage.wouldWaitForCheckpoint(cells.length)) {
        if (Date.now() >= waitUntil) {
          reply(response, 503, {
            error: `the server is still storing the cells created before these (a checkpoint has run for over ${adminCheckpointWaitMsMax / 1000} s); retry later`,
          });
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, adminCheckpointPollMs));
      }
      for (const { cellKey, members } of cells as { cellKey: string; members: NodeId[] }[])
        server.createCell(cellKey, members);
      // Answered once the founding nodes are durable: a crash after the answer keeps the cells.
      const notDurable = await new Promise<string | null>((resolve) => server.whenDurable(resolve));
      if (notDurable !== null) {
        reply(response, 503, { error: `the cells were not stored: ${notDurable}` });
        return;
      }
      reply(response, 200, { created: cells.length });
      return;
    }
    const allowed = adminMethods.get(url.pathname);
    if (allowed !== undefined) {
      response.setHeader("allow", allowed.join(", "));
      reply(response, 405, { error: `${url.pathname} takes ${allowed.join(" or ")}, not ${request.method}` });
      return;
    }
    reply(response, 404, {
      error: `no ${request.method} ${url.pathname}; try /healthz, /metrics, /status or /cells`,
    });
  }

  const createProblem = (body: unknown): string | null => {
    if (typeof body !== "object" || body === null) return "expected {cellKey, members}";
    const { cellKey, members } = body as { cellKey?: unknown; members?: unknown };
    if (typeof cellKey !== "string") return "cellKey must be a string";
    const keyProblem = cellKeyProblem(cellKey);
    if (keyProblem !== null) return keyProblem;
    if (!Array.isArray(members) || members.length === 0 || members.length > limits.membersMax)
      return `members must be a list of 1 to ${limits.membersMax} nodes`;
    const known = new Set(config.topology.servers.map((s) => s.id));
    for (const member of members as unknown[]) {
      const m = member as { serverId?: unknown; incarnation?: unknown };
      if (typeof m?.serverId !== "string" || !known.has(m.serverId))
        return `unknown member ${JSON.stringify(member)}`;
      if (typeof m.incarnation !== "number")
        return `incarnation of ${JSON.stringify(member)} must be a number`;
    }
    return initialMembersProblem(members as NodeId[]);
  };

  await new Promise<void>((resolve, reject) => {
    admin.once("error", reject);
    admin.listen(self.adminPort, self.host, () => {
      admin.off("error", reject);
      resolve();
    });
  }).catch(async (error: unknown) => {
    server.stop();
    await tcp.close();
    await closeStorage();
    throw new Error(
      `cannot open the admin port ${self.host}:${self.adminPort}: ${(error as Error).message}${listenAdvice(error)}`,
    );
  });

  const unwatch = processCollector?.watch(server, () => storage.collectWorkerGarbage()) ?? (() => {});
  // A disk filling up is said in the log before the server has to stop: at start, then every
  // 10 s, at most once a minute.
  let diskWarnedAtMs = Number.NEGATIVE_INFINITY;
  const checkDisk = (): void => {
    const warning = diskLowWarning(config.data, freeBytes(config.data));
    if (warning === null || Date.now() - diskWarnedAtMs < diskWarnIntervalMs) return;
    diskWarnedAtMs = Date.now();
    logger.log("warn", warning);
  };
  checkDisk();
  const diskTimer = setInterval(checkDisk, diskCheckIntervalMs);
  diskTimer.unref();
  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      unwatch();
      clearInterval(diskTimer);
      server.stop();
      admin.closeAllConnections();
      await new Promise<void>((resolve) => admin.close(() => resolve()));
      await tcp.close();
      await closeStorage();
      logger.log("info", "server stopped");
    })();
    return closing;
  };

  for (const dropped of storage.droppedJournalEnds) {
    logger.log(
      "warn",
      `journal ${dropped.path}: record ${dropped.seq} at byte ${dropped.at} ${dropped.problem}, with nothing written after it: ` +
        "it was dropped, as a crash during its write (the process killed, or the machine losing power) leaves it, never acknowledged. If this server " +
        "did not crash before this start, the disk damaged the last records it had acknowledged, and its nodes may have " +
        "forgotten promises and votes: replace its nodes with new incarnations (docs/OPERATIONS.md section 7)",
      { journal: dropped.path, record: dropped.seq, byte: dropped.at },
    );
  }
  logger.log("info", "server started", {
    address: formatServerAddress(self.host, self.port),
    admin: adminUrl(self),
    data: config.data,
    startMs: Date.now() - startedMs,
  });
  return {
    serverId: self.id,
    server,
    adminUrl: adminUrl(self),
    address: formatServerAddress(self.host, self.port),
    reloadKeys: (keys) => {
      tcp.setKeys(keys.signing, keys.alsoAccepted);
      ({ tokens, fingerprints: keyFingerprints } = keyring(keys));
      logger.log("info", "colony keys loaded", { colonyKeys: keyFingerprints.join(" ") });
    },
    close,
  };
}
