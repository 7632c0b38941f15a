/**
 * The TCP adapter of the transport port (docs/ARCHITECTURE.md). One connection per server pair;
 * messages sent to one destination in one turn are packed into one frame (several only past the
 * frame bounds) when the turn is flushed. Every frame carries an HMAC keyed with a link key derived
 * from the colony key: the servers' between two servers, the clients' on a client's connection
 * (frame.ts). The first frame on a connection is a hello naming its sender, which binds the
 * connection to that address; the end that accepted the connection answers with its own hello
 * once the dialler's is authenticated, under the key of the link the dialler's address names.
 *
 * Servers have dialable addresses ("host:port"). A client only dials; its address
 * ("client:<hex>") cannot be dialled, so a server answers it over the connection the client
 * opened. Delivery is best effort (the port allows loss): frames queued for a peer are bounded in
 * bytes and age, and the oldest are dropped and counted when a peer cannot keep up.
 *
 * Everything that can be counted is counted in `stats()`: a hostile or broken peer shows up there
 * and, rate limited, in the warnings, never as an exception.
 */
import { randomBytes } from "node:crypto";
import { connect, createServer, isIP, type Server, type Socket } from "node:net";
import { type Address, assert, ByteWriter, Fifo, utf8Length } from "../core/index.ts";
import {
  decodeFrame,
  encodeFrameBody,
  encodeHello,
  type FrameKey,
  FrameSplitter,
  frameKey,
  linkKey,
  messageFrameBytes,
} from "./frame.ts";
import {
  frameOverheadBytes,
  type TransportLimits,
  transportLimits,
  transportLimitsProblem,
} from "./limits.ts";
import type { TransportPort } from "./port.ts";

/**
 * Turns messages into bytes and back. `decode` may throw on bytes it does not accept. The bytes
 * it gets are a view of the received frame: what the decoded message keeps must be a copy.
 * `write`, when given, writes what `encode` returns into a writer (the transport then lays
 * messages out in their frame without a buffer for each).
 */
export interface MessageCodec<M> {
  encode(message: M): Uint8Array;
  decode(bytes: Uint8Array): M;
  write?(writer: ByteWriter, message: M): void;
}

/** Whether a listening host stands for every local address (0.0.0.0, ::, 0:0:0:0:0:0:0:0). */
function isWildcardHost(host: string): boolean {
  return host === "0.0.0.0" || (isIP(host) === 6 && /^[0:]+$/.test(host));
}

export type TransportWarn = (message: string, fields: Readonly<Record<string, string | number>>) => void;

export interface TcpTransportOptions<M> {
  /**
   * Where a server listens; leave out for an endpoint that only dials (a client). Port 0 picks a
   * free port, readable from `address` after `start()`. `advertiseHost` is the host peers dial,
   * when it differs from the listening host (e.g. listening on 0.0.0.0).
   */
  readonly listen?: { readonly host: string; readonly port: number; readonly advertiseHost?: string };
  /**
   * The colony key, shared by the colony's servers (at least 32 random bytes); the link keys that
   * tag frames are derived from it. With `keyKind: "client"`, the client key instead (the
   * clients' link key, `linkKey(colonyKey, "clients")`), which lets an endpoint that only dials
   * talk to servers as a client and nothing more.
   */
  readonly colonyKey: Uint8Array;
  /**
   * Another key accepted on received frames besides `colonyKey`, while the colony key is rotated
   * (at most one; docs/OPERATIONS.md, "Rotating the colony key"); of the same kind.
   */
  readonly alsoAcceptedKeys?: readonly Uint8Array[];
  /** What `colonyKey` holds: "colony" (the default) or "client" (a client key). */
  readonly keyKind?: KeyKind;
  readonly codec: MessageCodec<M>;
  /** Receives warnings (rate limited). */
  readonly warn?: TransportWarn;
  /** Overrides of the transport bounds; the result must still satisfy their relations. */
  readonly limits?: Partial<TransportLimits>;
  /** Uniform in [0, 1), for reconnect jitter. */
  readonly random?: () => number;
  /**
   * The IP address an endpoint that only dials (a client) connects from, on a host with several;
   * by default the kernel picks. A server dials from the address it listens on (when that is one
   * IP address), and this is ignored. Peers of the other address family are dialed without it.
   */
  readonly localAddress?: string;
  /**
   * False: the connections it dials do not keep the Node.js process running (a client, whose
   * owner keeps the process running while it has operations outstanding). Default true.
   */
  readonly holdsProcess?: boolean;
}

/** What an endpoint was given: the colony key, or only the clients' link key (a client key). */
export type KeyKind = "colony" | "client";

/** The keys an endpoint tags and checks frames with, by link; a client key gives no servers' key. */
interface LinkKeys {
  readonly servers: FrameKey | null;
  readonly clients: FrameKey;
}

function linkKeys(key: Uint8Array, alsoAccepted: readonly Uint8Array[], kind: KeyKind): LinkKeys {
  // Checked as given first, so a short key is reported as the key it is, not as a derived one.
  frameKey(key, alsoAccepted);
  if (kind === "client") return { servers: null, clients: frameKey(key, alsoAccepted) };
  const derive = (link: "servers" | "clients") =>
    frameKey(
      linkKey(key, link),
      alsoAccepted.map((other) => linkKey(other, link)),
    );
  return { servers: derive("servers"), clients: derive("clients") };
}

export const dropReasons = [
  /** Sent before start or after close, or still queued at close. */
  "closed",
  /** No route: a client address with no open connection, an address that is not host:port, or the peer table is full. */
  "unreachable",
  /** Too large: a length prefix, a frame, an address, a message count or a message. */
  "oversized",
  "malformed",
  "unauthenticated",
  "unsupported-version",
  /** A frame naming a sender other than its connection's hello, or a hello naming the wrong server. */
  "sender-mismatch",
  /** A sequence number not above the last one accepted on the connection. */
  "replayed",
  /** The codec could not encode a message handed to `send`. */
  "unencodable-message",
  /** The codec could not decode a received message. */
  "undecodable-message",
  /** A message arrived before a handler was installed. */
  "no-handler",
  /** The peer's queue was full: the oldest frames made room. */
  "backpressure",
  /** A queued frame grew older than peerQueueAgeMsMax before it could be written. */
  "expired",
  /** More than turnMessagesMax messages between two flushes. */
  "turn-full",
] as const;

export type DropReason = (typeof dropReasons)[number];

export interface TransportStats {
  /** Frames written to sockets, hellos included. */
  readonly framesSent: number;
  /** Frames accepted (authenticated, in sequence, from the right sender), hellos included. */
  readonly framesReceived: number;
  /**
   * Of those, frames tagged with an also-accepted key rather than this endpoint's own: while the
   * colony key is rotated, peers still signing with the other key. A count that stays put shows
   * that no peer uses it any more.
   */
  readonly framesReceivedUnderOtherKey: number;
  readonly messagesSent: number;
  readonly messagesReceived: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  /** Frames dropped, on the way out (queue) or in (rejected), by reason. */
  readonly framesDropped: Readonly<Record<DropReason, number>>;
  /** Messages dropped, by reason (a dropped outgoing frame counts its messages here too). */
  readonly messagesDropped: Readonly<Record<DropReason, number>>;
  /** Connected sockets now, inbound and outbound, including duplicates being retired. */
  readonly connectionsOpen: number;
  readonly connectionsAccepted: number;
  /** Inbound connections closed on arrival because connectionsAcceptedMax were open. */
  readonly connectionsRefused: number;
  /** Duplicate connections closed to keep one per peer. */
  readonly connectionsRetired: number;
  /** Connections closed because no authenticated hello came within helloTimeoutMs. */
  readonly helloTimeouts: number;
  readonly dials: number;
  /** Dials to a peer after a failed dial or a lost connection. */
  readonly reconnects: number;
  /** Payload bytes queued for all peers now. */
  readonly queuedBytes: number;
  /** Peers' whole queues dropped because all queues together reached queuedBytesMax. */
  readonly queuesShed: number;
  /** Bytes of partly received frames held for all connections now. */
  readonly receiveBufferedBytes: number;
  /** Connections closed because all partly received frames together reached receiveBufferedBytesMax. */
  readonly receiveBuffersShed: number;
  /** Turns of the event loop in which every connection stopped reading at turnReceiveBytesMax. */
  readonly readsPaused: number;
  /** Times a client's connection stopped being read because the client was not taking its answers. */
  readonly clientReadsHeld: number;
  /** Bytes held in the sockets of connections that stopped taking them, for all connections now. */
  readonly sendBufferedBytes: number;
  /** Connections closed because what their sockets held together reached sendBufferedBytesMax. */
  readonly sendBuffersShed: number;
  readonly warningsSuppressed: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function zeroCounts(): Record<DropReason, number> {
  const counts = {} as Record<DropReason, number>;
  for (const reason of dropReasons) counts[reason] = 0;
  return counts;
}

const clientPrefix = "client:";
/** Pushed to a splitter to go on with bytes it already holds. */
const emptyChunk = Buffer.alloc(0);

export function isClientAddress(address: Address): boolean {
  return address.startsWith(clientPrefix);
}

/** The host and port of a dialable address ("host:port" or "[v6]:port"), or null. */
export function parseServerAddress(address: Address): { host: string; port: number } | null {
  const colon = address.lastIndexOf(":");
  if (colon <= 0 || isClientAddress(address)) return null;
  let host = address.slice(0, colon);
  const portText = address.slice(colon + 1);
  if (!/^[0-9]{1,5}$/.test(portText)) return null;
  const port = Number(portText);
  if (port < 1 || port > 65535) return null;
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  else if (host.includes(":")) return null;
  if (host.length === 0) return null;
  return { host, port };
}

export function formatServerAddress(host: string, port: number): Address {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * What to do about a port that could not be bound, as a clause to add after the system's reason
 * ("" when there is nothing to add): for the messages of everything that listens on a port.
 */
export function listenAdvice(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  switch (code) {
    case "EADDRINUSE":
      return "; another process listens there (another colony, or a server of this one still running): stop it, or give this server other ports in the topology";
    case "EACCES":
      return "; this user may not bind that port (ports below 1024 need privileges): choose ports above 1023 in the topology";
    case "EADDRNOTAVAIL":
      return "; no network interface of this machine has that address: check the server's host in the topology";
    default:
      return "";
  }
}

/** Messages bound for one future frame, laid out as the frame will carry them. */
interface QueuedFrame {
  /** The messages as the frame carries them: each a varint length and the payload. */
  readonly body: Uint8Array;
  readonly count: number;
  /** The body's length (the messages' frame bytes). */
  readonly bytes: number;
  readonly queuedAtMs: number;
}

let nextConnectionId = 1;

/** The frame and message writers start this big, and are replaced after growing past scratchBytesKept. */
const scratchBytesInitial = 4096;
const scratchBytesKept = 256 * 1024;

class Connection {
  readonly id = nextConnectionId++;
  /** The address at the other end: the dialled address, or the hello's once it arrives. */
  remote: Address | null;
  /** Who dialled: decides which of two duplicate connections survives. */
  dialer: Address | null;
  connected: boolean;
  /** Counted in the transport's dials in progress (an outbound connection not yet connected). */
  dialPending: boolean;
  helloReceived = false;
  /** Last sequence number written; the hello is 0. */
  sequenceSent = 0;
  /** Last sequence number accepted from the peer. */
  sequenceReceived = -1;
  /** The socket's buffer is full: wait for 'drain'. */
  blocked = false;
  /** Not read until 'drain': a client not taking its answers (TcpTransport.holdReads). */
  readsHeld = false;
  /** What the socket held when it blocked (counted in sendBufferedBytes until 'drain' or close). */
  sendBuffered = 0;
  /** A duplicate being closed: no more writes, but frames still arriving are delivered. */
  retiring = false;
  badFrames = 0;
  /** The code of the socket's last error (ECONNREFUSED for a dial nobody listened to). */
  errorCode: string | null = null;
  timer: NodeJS.Timeout | null = null;
  readonly splitter: FrameSplitter;
  readonly closed: Promise<void>;
  private resolveClosed: () => void = () => {};

  constructor(
    readonly socket: Socket,
    readonly direction: "inbound" | "outbound",
    remote: Address | null,
    dialer: Address | null,
    bounds: TransportLimits,
  ) {
    this.remote = remote;
    this.dialer = dialer;
    this.connected = direction === "inbound";
    this.dialPending = direction === "outbound";
    this.splitter = new FrameSplitter(bounds);
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  markClosed(): void {
    this.resolveClosed();
  }

  clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

class Peer {
  connection: Connection | null = null;
  /** An outbound connection still connecting. */
  dialing: Connection | null = null;
  dialTimer: NodeJS.Timeout | null = null;
  /** Consecutive dials without an authenticated hello back; drives the backoff. */
  failedDials = 0;
  /** When a lost connection was last dialled again at once (performance.now()). */
  lastProbeMs = Number.NEGATIVE_INFINITY;
  everDialled = false;
  /** Frames in age order (expiry looks at the head). */
  readonly queue = new Fifo<QueuedFrame>();
  queuedBytes = 0;

  constructor(
    readonly address: Address,
    readonly dialable: { host: string; port: number } | null,
  ) {}
}

type State = "new" | "starting" | "started" | "closed";

export class TcpTransport<M> implements TransportPort<M> {
  private readonly bounds: TransportLimits;
  private keys: LinkKeys;
  private readonly keyKind: KeyKind;
  /** Picks the key a received frame must carry by the sender it names (decodeFrame). */
  private readonly keyOfSender = (sender: Address): FrameKey | null => this.keyBetween(sender);
  private readonly codec: MessageCodec<M>;
  private readonly warnSink: TransportWarn | undefined;
  private readonly random: () => number;
  private readonly listenOptions: TcpTransportOptions<M>["listen"];
  /**
   * The local address outgoing connections are made from: the listening host when it is one IP
   * address (not a wildcard), so that a server reaches its peers from the address it is known
   * by and firewall rules between servers can name both ends. Otherwise (a hostname, a wildcard,
   * a peer of the other address family) the kernel chooses.
   */
  private readonly dialFrom: string | undefined;
  private readonly holdsProcess: boolean;
  private selfAddress: Address | null;
  /** Bytes a frame from this endpoint adds around its messages. */
  private frameOverhead = 0;
  private state: State = "new";
  private server: Server | null = null;
  private handler: ((from: Address, message: M) => void) | null = null;
  private lostHandler: ((peer: Address, refused: boolean) => void) | null = null;

  private readonly pending = new Map<Address, M[]>();
  /** Where enqueue lays out a frame's messages, and where a message is written first. */
  private frameBody = new ByteWriter(scratchBytesInitial);
  private messageScratch = new ByteWriter(scratchBytesInitial);
  private pendingCount = 0;
  private readonly peers = new Map<Address, Peer>();
  private readonly connections = new Set<Connection>();
  private inboundOpen = 0;
  private dialsPending = 0;
  private localDelivery: { immediate: NodeJS.Immediate; messages: M[] } | null = null;
  /** Bytes read in this turn of the event loop (countTurnBytes), and whether reads stopped. */
  private turnReceived: { bytes: number; paused: boolean; immediate: NodeJS.Immediate } | null = null;
  private closing: Promise<void> | null = null;

  private warningWindowStartMs = 0;
  private warningsInWindow = 0;

  private readonly counters: Mutable<
    Omit<TransportStats, "framesDropped" | "messagesDropped" | "connectionsOpen">
  > = {
    framesSent: 0,
    framesReceived: 0,
    framesReceivedUnderOtherKey: 0,
    messagesSent: 0,
    messagesReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    connectionsAccepted: 0,
    connectionsRefused: 0,
    connectionsRetired: 0,
    helloTimeouts: 0,
    dials: 0,
    reconnects: 0,
    queuedBytes: 0,
    queuesShed: 0,
    receiveBufferedBytes: 0,
    receiveBuffersShed: 0,
    readsPaused: 0,
    clientReadsHeld: 0,
    sendBufferedBytes: 0,
    sendBuffersShed: 0,
    warningsSuppressed: 0,
  };
  private readonly framesDropped = zeroCounts();
  private readonly messagesDropped = zeroCounts();

  constructor(options: TcpTransportOptions<M>) {
    const bounds = { ...transportLimits, ...options.limits };
    const problem = transportLimitsProblem(bounds);
    if (problem !== null) throw new RangeError(`invalid transport limits: ${problem}`);
    this.bounds = Object.freeze(bounds);
    this.keyKind = options.keyKind ?? "colony";
    if (this.keyKind !== "colony" && this.keyKind !== "client")
      throw new RangeError(`keyKind must be "colony" or "client", got ${JSON.stringify(this.keyKind)}`);
    if (this.keyKind === "client" && options.listen !== undefined)
      throw new RangeError(
        "a client key only lets an endpoint dial servers as a client; an endpoint that listens (a server) needs the colony key",
      );
    this.keys = linkKeys(options.colonyKey, options.alsoAcceptedKeys ?? [], this.keyKind);
    this.codec = options.codec;
    this.warnSink = options.warn;
    this.random = options.random ?? Math.random;
    this.listenOptions = options.listen;
    const listenHost = options.listen?.host;
    if (options.localAddress !== undefined && isIP(options.localAddress) === 0)
      throw new RangeError(`localAddress must be an IP address, got ${JSON.stringify(options.localAddress)}`);
    this.holdsProcess = options.holdsProcess ?? true;
    this.dialFrom =
      listenHost !== undefined
        ? isIP(listenHost) !== 0 && !isWildcardHost(listenHost)
          ? listenHost
          : undefined
        : options.localAddress;
    if (options.listen === undefined) {
      this.selfAddress = `${clientPrefix}${randomBytes(8).toString("hex")}`;
    } else {
      const { host, port, advertiseHost } = options.listen;
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new RangeError(`listen port must be an integer in [0, 65535], got ${port}`);
      if (host.length === 0) throw new RangeError("listen host must not be empty");
      this.selfAddress = port === 0 ? null : formatServerAddress(advertiseHost ?? host, port);
    }
    if (this.selfAddress !== null) this.setAddress(this.selfAddress);
  }

  private setAddress(address: Address): void {
    const bytes = utf8Length(address);
    if (bytes > this.bounds.addressBytesMax)
      throw new RangeError(
        `address ${address} is ${bytes} bytes; the limit is ${this.bounds.addressBytesMax}`,
      );
    this.selfAddress = address;
    this.frameOverhead = frameOverheadBytes(this.bounds, bytes);
  }

  /** This endpoint's address. A server listening on port 0 has one only after `start()`. */
  get address(): Address {
    assert(this.selfAddress !== null, "a transport listening on port 0 has no address before start()");
    return this.selfAddress;
  }

  /** Listen (servers) and begin accepting `send`. Rejects if the port cannot be bound. */
  async start(): Promise<void> {
    assert(this.state === "new", () => `start() on a transport that is ${this.state}`);
    this.state = "starting";
    const listen = this.listenOptions;
    if (listen !== undefined) {
      const server = createServer({ noDelay: true });
      server.on("connection", (socket) => this.accept(socket));
      try {
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen(listen.port, listen.host, () => {
            server.off("error", reject);
            resolve();
          });
        });
      } catch (error) {
        if (this.state === "starting") this.state = "new";
        const why = error instanceof Error ? error.message : String(error);
        throw new Error(
          `cannot listen on ${formatServerAddress(listen.host, listen.port)}: ${why}${listenAdvice(error)}`,
        );
      }
      if (this.isClosed()) {
        // close() ran while the listener was being bound; it had nothing to close yet.
        await new Promise((resolve) => server.close(resolve));
        return;
      }
      server.on("error", (error) => this.warn("listener error", { error: error.message }));
      this.server = server;
      const bound = server.address();
      assert(bound !== null && typeof bound === "object", "a TCP listener has an address");
      if (this.selfAddress === null)
        this.setAddress(formatServerAddress(listen.advertiseHost ?? listen.host, bound.port));
    }
    this.state = "started";
  }

  /** Read through a call: close() may change the state across an await. */
  private isClosed(): boolean {
    return this.state === "closed";
  }

  send(to: Address, message: M): void {
    if (this.state !== "started") {
      this.messagesDropped.closed += 1;
      return;
    }
    if (this.pendingCount >= this.bounds.turnMessagesMax) {
      this.messagesDropped["turn-full"] += 1;
      return;
    }
    let messages = this.pending.get(to);
    if (messages === undefined) {
      messages = [];
      this.pending.set(to, messages);
    }
    messages.push(message);
    this.pendingCount += 1;
  }

  flush(): void {
    if (this.state !== "started") {
      this.messagesDropped.closed += this.pendingCount;
      this.pending.clear();
      this.pendingCount = 0;
      return;
    }
    for (const [to, messages] of this.pending) this.enqueue(to, messages);
    this.pending.clear();
    this.pendingCount = 0;
  }

  onMessage(handler: (from: Address, message: M) => void): void {
    this.handler = handler;
  }

  /**
   * Install the receiver of losses of a dialable peer (a server): `refused` false when its
   * connection in use closed, true when a dial to it was refused (nothing listens at its
   * address: its process is gone). A lost connection is dialled again at once, so a peer whose
   * process died is known as refused within a round trip. Neither proves the peer dead for long
   * (it may be restarting): callers use it as a hint, never for safety.
   */
  onPeerLost(handler: (peer: Address, refused: boolean) => void): void {
    this.lostHandler = handler;
  }

  stats(): TransportStats {
    return {
      ...this.counters,
      connectionsOpen: this.connectionsOpen(),
      framesDropped: { ...this.framesDropped },
      messagesDropped: { ...this.messagesDropped },
    };
  }

  private connectionsOpen(): number {
    let open = 0;
    for (const connection of this.connections) if (connection.connected) open += 1;
    return open;
  }

  /**
   * Replaces the keys frames are tagged with and checked against, from the next frame on: the
   * colony key is rotated without a restart (docs/OPERATIONS.md section 1.4). Unusable keys throw
   * a RangeError and the transport keeps the keys it had.
   */
  setKeys(colonyKey: Uint8Array, alsoAcceptedKeys: readonly Uint8Array[] = []): void {
    this.keys = linkKeys(colonyKey, alsoAcceptedKeys, this.keyKind);
  }

  /**
   * The key of the link between this endpoint and `peer`: the clients' when either end is a
   * client, else the servers' (null for an endpoint holding only a client key).
   */
  private keyBetween(peer: Address): FrameKey | null {
    if (isClientAddress(peer) || isClientAddress(this.address)) return this.keys.clients;
    return this.keys.servers;
  }

  /** The key frames to `peer` are tagged with. */
  private keyTo(peer: Address): FrameKey {
    const key = this.keyBetween(peer);
    assert(
      key !== null,
      () => `no key to tag frames to ${peer} with (a client key only reaches servers as a client)`,
    );
    return key;
  }

  /** Close the listener and every connection, clear every timer; queued messages are dropped. */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.state = "closed";
    this.messagesDropped.closed += this.pendingCount;
    this.pending.clear();
    this.pendingCount = 0;
    if (this.turnReceived !== null) clearImmediate(this.turnReceived.immediate);
    this.turnReceived = null;
    if (this.localDelivery !== null) {
      clearImmediate(this.localDelivery.immediate);
      this.messagesDropped.closed += this.localDelivery.messages.length;
      this.localDelivery = null;
    }
    for (const peer of this.peers.values()) {
      if (peer.dialTimer !== null) clearTimeout(peer.dialTimer);
      peer.dialTimer = null;
      this.dropQueue(peer, "closed");
    }
    const waits: Promise<void>[] = [];
    for (const connection of this.connections) {
      connection.clearTimer();
      connection.socket.destroy();
      waits.push(connection.closed);
    }
    const server = this.server;
    this.server = null;
    if (server !== null) waits.push(new Promise((resolve) => server.close(() => resolve())));
    this.closing = Promise.all(waits).then(() => {
      this.peers.clear();
    });
    return this.closing;
  }

  // ---- sending

  private enqueue(to: Address, messages: readonly M[]): void {
    if (to === this.selfAddress) {
      this.deliverLocally(messages);
      return;
    }
    const peer = this.peerFor(to);
    if (peer === null) {
      this.messagesDropped.unreachable += messages.length;
      return;
    }
    // The frame being filled: its messages laid out in frameBody, `count` of them.
    const body = this.frameBody.clear();
    let count = 0;
    for (const message of messages) {
      let payload: Uint8Array;
      try {
        payload = this.encode(message);
      } catch (error) {
        this.messagesDropped["unencodable-message"] += 1;
        this.warn("a message could not be encoded", { to, error: describe(error) });
        continue;
      }
      if (payload.length > this.bounds.messageBytesMax) {
        this.messagesDropped.oversized += 1;
        this.warn("a message exceeds messageBytesMax", { to, bytes: payload.length });
        continue;
      }
      const bytes = messageFrameBytes(payload);
      if (
        count > 0 &&
        (count >= this.bounds.frameMessagesMax ||
          this.frameOverhead + body.size + bytes > this.bounds.frameBytesMax)
      ) {
        this.pushFrame(peer, this.takeFrame(count));
        count = 0;
      }
      body.uint(payload.length).raw(payload);
      count += 1;
    }
    if (count > 0) this.pushFrame(peer, this.takeFrame(count));
    // A burst of large messages does not keep its memory.
    if (this.frameBody.capacity > scratchBytesKept) this.frameBody = new ByteWriter(scratchBytesInitial);
    if (this.messageScratch.capacity > scratchBytesKept)
      this.messageScratch = new ByteWriter(scratchBytesInitial);
    this.pump(peer);
  }

  /** The message's bytes: a view of a scratch writer when the codec writes, valid until the next. */
  private encode(message: M): Uint8Array {
    const codec = this.codec;
    if (codec.write === undefined) return codec.encode(message);
    const scratch = this.messageScratch.clear();
    codec.write(scratch, message);
    return scratch.view();
  }

  /** The frame laid out in frameBody so far, as a queued frame of its own; frameBody starts over. */
  private takeFrame(count: number): QueuedFrame {
    const body = this.frameBody.finish();
    this.frameBody.clear();
    return { body, count, bytes: body.length, queuedAtMs: performance.now() };
  }

  private pushFrame(peer: Peer, frame: QueuedFrame): void {
    assert(frame.bytes <= this.bounds.peerQueueBytesMax, "a frame fits in a peer queue");
    while (peer.queuedBytes + frame.bytes > this.bounds.peerQueueBytesMax) {
      const oldest = peer.queue.shift();
      assert(oldest !== undefined, "queued bytes are accounted to queued frames");
      this.unqueue(peer, oldest);
      this.countDroppedFrame(oldest, "backpressure");
    }
    this.shedLargestQueues(frame.bytes);
    peer.queue.push(frame);
    peer.queuedBytes += frame.bytes;
    this.counters.queuedBytes += frame.bytes;
  }

  /**
   * Makes room for `bytes` more under queuedBytesMax by dropping whole queues, the largest first.
   * Each scan frees at least the average queue, so scans are rare even under pressure.
   */
  private shedLargestQueues(bytes: number): void {
    while (this.counters.queuedBytes + bytes > this.bounds.queuedBytesMax) {
      let largest: Peer | null = null;
      for (const peer of this.peers.values()) {
        if (peer.queuedBytes > (largest?.queuedBytes ?? 0)) largest = peer;
      }
      assert(largest !== null, "queued bytes are accounted to peers");
      this.counters.queuesShed += 1;
      this.dropQueue(largest, "backpressure");
    }
  }

  private unqueue(peer: Peer, frame: QueuedFrame): void {
    peer.queuedBytes -= frame.bytes;
    this.counters.queuedBytes -= frame.bytes;
    assert(peer.queuedBytes >= 0 && this.counters.queuedBytes >= 0, "queued bytes never go negative");
  }

  private countDroppedFrame(frame: QueuedFrame, reason: DropReason): void {
    this.framesDropped[reason] += 1;
    this.messagesDropped[reason] += frame.count;
  }

  private dropQueue(peer: Peer, reason: DropReason): void {
    for (let frame = peer.queue.shift(); frame !== undefined; frame = peer.queue.shift()) {
      this.unqueue(peer, frame);
      this.countDroppedFrame(frame, reason);
    }
  }

  /** Write queued frames while the connection takes them; dial if there is no connection. */
  private pump(peer: Peer): void {
    this.expire(peer);
    const connection = peer.connection;
    if (connection === null) {
      if (peer.queue.length > 0) this.ensureDial(peer);
      else this.forgetIfIdle(peer);
      return;
    }
    while (!connection.blocked && peer.queue.length > 0) {
      const frame = peer.queue.shift() as QueuedFrame;
      this.unqueue(peer, frame);
      connection.sequenceSent += 1;
      const bytes = encodeFrameBody(
        this.keyTo(peer.address),
        { sender: this.address, sequence: connection.sequenceSent, count: frame.count, body: frame.body },
        this.bounds,
      );
      this.counters.framesSent += 1;
      this.counters.messagesSent += frame.count;
      this.counters.bytesSent += bytes.length;
      if (!connection.socket.write(bytes)) {
        connection.blocked = true;
        this.holdSendBuffer(connection);
        this.holdReads(connection, peer);
        return;
      }
    }
  }

  /**
   * A client that does not take its answers is not read either, until it does ('drain'): its
   * requests wait in its socket and in its own bounded queue, rather than being served with
   * answers that would only be dropped, over and over, at the cost of every other cell here.
   * Never a server's connection: two servers each waiting for the other to read would wait for
   * ever. A client reads whatever its sends do, so it never waits for the server in turn.
   */
  private holdReads(connection: Connection, peer: Peer): void {
    if (!isClientAddress(peer.address) || connection.readsHeld || connection.socket.destroyed) return;
    connection.readsHeld = true;
    this.counters.clientReadsHeld += 1;
    connection.socket.pause();
  }

  /** Counts what a blocked connection's socket holds; past the bound, the largest holder is closed. */
  private holdSendBuffer(connection: Connection): void {
    const held = connection.socket.writableLength;
    this.counters.sendBufferedBytes += held - connection.sendBuffered;
    connection.sendBuffered = held;
    while (this.counters.sendBufferedBytes > this.bounds.sendBufferedBytesMax) {
      const closed = this.closeLargestHolder(
        (c) => c.sendBuffered,
        (c) => this.releaseSendBuffer(c),
        "sendBuffersShed",
        "bytes held in sockets that stopped reading over their bound",
      );
      assert(closed, "bytes held in sockets are accounted to connections");
    }
  }

  /**
   * Closes the connection holding the most by `held` (a bound over all connections was passed),
   * releasing what it held at once; false if none holds anything.
   */
  private closeLargestHolder(
    held: (connection: Connection) => number,
    release: (connection: Connection) => void,
    counter: "receiveBuffersShed" | "sendBuffersShed",
    what: string,
  ): boolean {
    let largest: Connection | null = null;
    for (const connection of this.connections) {
      if (largest === null || held(connection) > held(largest)) largest = connection;
    }
    if (largest === null || held(largest) === 0) return false;
    this.counters[counter] += 1;
    this.warn(`${what}: closing the connection holding the most`, {
      remote: peerOf(largest),
      bytes: held(largest),
    });
    release(largest);
    largest.socket.destroy();
    return true;
  }

  /** What a connection's socket held no longer counts (it drained, or it closed). */
  private releaseSendBuffer(connection: Connection): void {
    this.counters.sendBufferedBytes -= connection.sendBuffered;
    connection.sendBuffered = 0;
  }

  /** Drop queued frames too old to be worth sending; the queue is in age order. */
  private expire(peer: Peer): void {
    const nowMs = performance.now();
    for (let head = peer.queue.peek(); head !== undefined; head = peer.queue.peek()) {
      if (nowMs - head.queuedAtMs <= this.bounds.peerQueueAgeMsMax) break;
      peer.queue.shift();
      this.unqueue(peer, head);
      this.countDroppedFrame(head, "expired");
    }
  }

  private deliverLocally(messages: readonly M[]): void {
    if (this.localDelivery === null) {
      const batch: M[] = [];
      // A later turn, like a message from elsewhere: the handler is never re-entered from flush().
      const immediate = setImmediate(() => {
        this.localDelivery = null;
        for (const message of batch) this.deliver(this.address, message);
      });
      this.localDelivery = { immediate, messages: batch };
    }
    for (const message of messages) this.localDelivery.messages.push(message);
  }

  private deliver(from: Address, message: M): void {
    if (this.handler === null) {
      this.messagesDropped["no-handler"] += 1;
      return;
    }
    this.counters.messagesReceived += 1;
    // A throwing handler is a bug above the transport; it is not caught here.
    this.handler(from, message);
  }

  // ---- peers and dialling

  private peerFor(address: Address): Peer | null {
    const existing = this.peers.get(address);
    if (existing !== undefined) return existing;
    const dialable = parseServerAddress(address);
    if (dialable === null) return null; // a client with no connection, or not an address
    return this.addPeer(address, dialable);
  }

  private addPeer(address: Address, dialable: { host: string; port: number } | null): Peer | null {
    if (this.peers.size >= this.bounds.peersMax) {
      this.warn("peer table full", { address, peersMax: this.bounds.peersMax });
      return null;
    }
    const peer = new Peer(address, dialable);
    this.peers.set(address, peer);
    return peer;
  }

  /** A peer with nothing to do is forgotten, so the table holds only live peers. */
  private forgetIfIdle(peer: Peer): void {
    if (
      peer.connection === null &&
      peer.dialing === null &&
      peer.dialTimer === null &&
      peer.queue.length === 0 &&
      this.peers.get(peer.address) === peer
    )
      this.peers.delete(peer.address);
  }

  private ensureDial(peer: Peer): void {
    if (this.state !== "started" || peer.dialable === null) return;
    if (peer.connection !== null || peer.dialing !== null || peer.dialTimer !== null) return;
    if (this.dialsPending >= this.bounds.dialsPendingMax) {
      this.scheduleDial(peer);
      return;
    }
    this.dial(peer, peer.dialable);
  }

  private scheduleDial(peer: Peer): void {
    if (this.state !== "started" || peer.dialTimer !== null) return;
    const ceilingMs = Math.min(
      this.bounds.reconnectDelayMsMax,
      this.bounds.reconnectDelayMsMin * 2 ** Math.min(peer.failedDials, 30),
    );
    // Jitter in [ceiling/2, ceiling): spreads the dials of many servers restarting together.
    const delayMs = ceilingMs / 2 + (this.random() * ceilingMs) / 2;
    peer.failedDials += 1;
    peer.dialTimer = setTimeout(() => {
      peer.dialTimer = null;
      // A peer that stays unreachable is dialled only while something fresh waits for it.
      this.expire(peer);
      if (peer.queue.length > 0) this.ensureDial(peer);
      else this.forgetIfIdle(peer);
    }, delayMs);
    peer.dialTimer.unref();
  }

  private dial(peer: Peer, target: { host: string; port: number }): void {
    this.counters.dials += 1;
    if (peer.everDialled) this.counters.reconnects += 1;
    peer.everDialled = true;
    const socket = connect({
      host: target.host,
      port: target.port,
      noDelay: true,
      // Only towards an address of the same family (a hostname may resolve to either).
      ...(this.dialFrom !== undefined && isIP(target.host) === isIP(this.dialFrom)
        ? { localAddress: this.dialFrom }
        : {}),
    });
    if (!this.holdsProcess) socket.unref();
    const connection = new Connection(socket, "outbound", peer.address, this.address, this.bounds);
    peer.dialing = connection;
    this.dialsPending += 1;
    this.connections.add(connection);
    connection.timer = setTimeout(() => {
      this.warn("dial timed out", { peer: peer.address });
      socket.destroy();
    }, this.bounds.dialTimeoutMs);
    connection.timer.unref();
    socket.once("connect", () => {
      this.endDial(connection);
      connection.connected = true;
      connection.clearTimer();
      if (peer.dialing === connection) peer.dialing = null;
      if (this.state !== "started") {
        socket.destroy();
        return;
      }
      socket.setNoDelay(true);
      this.writeHello(connection, peer.address);
      this.armHelloTimer(connection);
      this.attach(peer, connection);
    });
    this.wire(connection);
  }

  private endDial(connection: Connection): void {
    if (!connection.dialPending) return;
    connection.dialPending = false;
    this.dialsPending -= 1;
    assert(this.dialsPending >= 0, "dials in progress are counted once each");
  }

  // ---- connections

  private accept(socket: Socket): void {
    if (this.state !== "started" || this.inboundOpen >= this.bounds.connectionsAcceptedMax) {
      if (this.state === "started") {
        this.counters.connectionsRefused += 1;
        this.warn("connection refused: too many open", { max: this.bounds.connectionsAcceptedMax });
      }
      socket.destroy();
      return;
    }
    this.counters.connectionsAccepted += 1;
    this.inboundOpen += 1;
    socket.setNoDelay(true);
    const connection = new Connection(socket, "inbound", null, null, this.bounds);
    this.connections.add(connection);
    this.wire(connection);
    this.armHelloTimer(connection);
  }

  /**
   * The hello goes first on every connection, before any queued frame: at once on a connection
   * this endpoint dialled, and on one it accepted once the dialler's hello is authenticated (its
   * address names the link, and so the key).
   */
  private writeHello(connection: Connection, peer: Address): void {
    const hello = encodeHello(this.keyTo(peer), this.address, this.bounds);
    this.counters.framesSent += 1;
    this.counters.bytesSent += hello.length;
    if (!connection.socket.write(hello)) connection.blocked = true;
  }

  private armHelloTimer(connection: Connection): void {
    connection.clearTimer();
    connection.timer = setTimeout(() => {
      connection.timer = null;
      if (connection.helloReceived) return;
      this.counters.helloTimeouts += 1;
      this.warn("no hello: closing connection", { remote: peerOf(connection) });
      connection.socket.destroy();
    }, this.bounds.helloTimeoutMs);
    connection.timer.unref();
  }

  private wire(connection: Connection): void {
    const socket = connection.socket;
    socket.on("data", (chunk: Buffer) => this.receive(connection, chunk));
    // A connection opened while reads are paused waits for the next turn too.
    if (this.turnReceived?.paused === true) socket.pause();
    socket.on("drain", () => {
      connection.blocked = false;
      this.releaseSendBuffer(connection);
      if (connection.readsHeld) {
        connection.readsHeld = false;
        if (this.turnReceived?.paused !== true) socket.resume();
      }
      const peer = connection.remote === null ? undefined : this.peers.get(connection.remote);
      if (peer !== undefined && peer.connection === connection) this.pump(peer);
    });
    socket.on("error", (error: NodeJS.ErrnoException) => {
      // Expected on a network: resets, refused dials. 'close' follows and does the bookkeeping.
      connection.errorCode = error.code ?? null;
      if (connection.connected)
        this.warn("connection error", { remote: peerOf(connection), error: error.message });
    });
    socket.on("close", () => this.onClose(connection));
  }

  /**
   * Make `connection` the peer's connection, unless the peer already has one that wins. Of two
   * connections between the same servers, the one dialled by the lower address wins, so both
   * ends pick the same one without talking; between two dialled by the same end, the newer wins
   * (the older is likely dead). The loser is half-closed: each end stops writing to it, but reads
   * until the other end closes too, so frames already written on it are still delivered, and
   * frames not yet written stay in the peer's queue for the winner.
   */
  private attach(peer: Peer, connection: Connection): void {
    const existing = peer.connection;
    let winner = connection;
    if (existing !== null && existing !== connection) {
      winner = this.preferred(peer, existing, connection);
      this.retire(winner === connection ? existing : connection);
    }
    peer.connection = winner;
    if (peer.dialing !== null && peer.dialing !== winner) {
      // A connection is up; a dial still in flight would only make a duplicate.
      const abandoned = peer.dialing;
      this.endDial(abandoned);
      peer.dialing = null;
      abandoned.clearTimer();
      abandoned.socket.destroy();
    }
    if (peer.dialTimer !== null) {
      clearTimeout(peer.dialTimer);
      peer.dialTimer = null;
    }
    this.pump(peer);
  }

  private preferred(peer: Peer, a: Connection, b: Connection): Connection {
    const lower = this.address < peer.address ? this.address : peer.address;
    const aLower = a.dialer === lower;
    const bLower = b.dialer === lower;
    if (aLower !== bLower) return aLower ? a : b;
    return a.id > b.id ? a : b;
  }

  private retire(connection: Connection): void {
    if (connection.retiring) return;
    connection.retiring = true;
    this.counters.connectionsRetired += 1;
    connection.socket.end();
    connection.clearTimer();
    connection.timer = setTimeout(() => connection.socket.destroy(), this.bounds.retireGraceMs);
    connection.timer.unref();
  }

  /** What a connection held of a partly received frame no longer counts. */
  private releaseReceiveBuffer(connection: Connection): void {
    this.counters.receiveBufferedBytes -= connection.splitter.buffered;
    connection.splitter.discard();
  }

  private onClose(connection: Connection): void {
    connection.clearTimer();
    this.releaseReceiveBuffer(connection);
    this.releaseSendBuffer(connection);
    this.connections.delete(connection);
    if (connection.direction === "inbound") this.inboundOpen -= 1;
    connection.markClosed();
    const peer = connection.remote === null ? undefined : this.peers.get(connection.remote);
    if (connection.direction === "outbound" && !connection.connected) {
      // A dial that never connected.
      this.endDial(connection);
      if (peer !== undefined && peer.dialing === connection) {
        peer.dialing = null;
        if (peer.queue.length > 0) this.scheduleDial(peer);
        else this.forgetIfIdle(peer);
        if (connection.errorCode === "ECONNREFUSED" && this.state === "started")
          this.lostHandler?.(peer.address, true);
      }
      return;
    }
    if (peer === undefined || peer.connection !== connection) return;
    peer.connection = null;
    if (this.state !== "started") return;
    if (peer.dialable === null) {
      // A client: it can only be reached over the connection it opened.
      this.dropQueue(peer, "unreachable");
      this.forgetIfIdle(peer);
      return;
    }
    // Dialled again at once, queue or not (a refusal tells that the peer's process is gone), at
    // most once per reconnectDelayMsMax: a peer that keeps closing connections is not redialled
    // in a loop. Otherwise as before: again after a backoff while something waits for it.
    const now = performance.now();
    if (connection.helloReceived && now - peer.lastProbeMs >= this.bounds.reconnectDelayMsMax) {
      peer.lastProbeMs = now;
      this.ensureDial(peer);
    } else if (peer.queue.length > 0) {
      this.scheduleDial(peer);
    } else {
      this.forgetIfIdle(peer);
    }
    this.lostHandler?.(peer.address, false);
  }

  // ---- receiving

  private receive(connection: Connection, chunk: Buffer): void {
    if (connection.socket.destroyed) return;
    this.counters.bytesReceived += chunk.length;
    if (chunk.length > 0) this.countTurnBytes(chunk.length);
    const admitted = connection.splitter.isAdmitted;
    const heldBefore = connection.splitter.buffered;
    const split = connection.splitter.push(chunk);
    this.counters.receiveBufferedBytes += connection.splitter.buffered - heldBefore;
    if (this.counters.receiveBufferedBytes > this.bounds.receiveBufferedBytesMax)
      this.closeLargestHolder(
        (c) => c.splitter.buffered,
        (c) => this.releaseReceiveBuffer(c),
        "receiveBuffersShed",
        "partly received frames over their bound",
      );
    if (!split.ok) {
      this.framesDropped.oversized += 1;
      this.warn("oversized frame: closing connection", {
        remote: peerOf(connection),
        detail: split.detail,
      });
      connection.socket.destroy();
      return;
    }
    for (const frame of split.frames) {
      if (connection.socket.destroyed) return;
      this.receiveFrame(connection, frame);
    }
    // What came behind an accepted hello waited in the splitter, held to a hello's bound.
    if (
      split.frames.length > 0 &&
      !admitted &&
      connection.splitter.isAdmitted &&
      !connection.socket.destroyed
    ) {
      this.receive(connection, emptyChunk);
    }
  }

  /**
   * Counts bytes read in this turn of the event loop; past turnReceiveBytesMax every connection
   * stops reading until the next turn. The turn's end is an immediate queued at its first read,
   * so it runs after the reads of the turn and before the receiver's own turn is done with them:
   * reading resumes in the next poll for data, by which time the receiver has drained its inbox.
   */
  private countTurnBytes(bytes: number): void {
    if (this.turnReceived === null) {
      const turn = {
        bytes: 0,
        paused: false,
        immediate: setImmediate(() => {
          this.turnReceived = null;
          if (!turn.paused) return;
          for (const connection of this.connections) if (!connection.readsHeld) connection.socket.resume();
        }),
      };
      this.turnReceived = turn;
    }
    const turn = this.turnReceived;
    turn.bytes += bytes;
    if (turn.paused || turn.bytes <= this.bounds.turnReceiveBytesMax) return;
    turn.paused = true;
    this.counters.readsPaused += 1;
    for (const connection of this.connections) connection.socket.pause();
  }

  private rejectFrame(connection: Connection, reason: DropReason, detail: string): void {
    this.framesDropped[reason] += 1;
    connection.badFrames += 1;
    if (!connection.helloReceived || connection.badFrames > this.bounds.badFramesPerConnectionMax) {
      this.warn("rejected frame: closing connection", {
        remote: peerOf(connection),
        reason,
        detail,
      });
      connection.socket.destroy();
    }
  }

  private receiveFrame(connection: Connection, bytes: Uint8Array): void {
    const decoded = decodeFrame(this.keyOfSender, bytes, this.bounds);
    if (!decoded.ok) {
      this.rejectFrame(connection, decoded.reason, decoded.detail);
      return;
    }
    const frame = decoded.frame;
    if (!connection.helloReceived) {
      this.receiveHello(connection, frame.sender, frame.sequence, frame.messages.length);
      if (decoded.otherKey && connection.helloReceived) this.counters.framesReceivedUnderOtherKey += 1;
      return;
    }
    if (frame.sender !== connection.remote) {
      this.rejectFrame(
        connection,
        "sender-mismatch",
        `frame from ${frame.sender} on ${connection.remote}'s connection`,
      );
      return;
    }
    if (frame.sequence <= connection.sequenceReceived) {
      this.rejectFrame(
        connection,
        "replayed",
        `sequence ${frame.sequence} after ${connection.sequenceReceived}`,
      );
      return;
    }
    connection.sequenceReceived = frame.sequence;
    this.counters.framesReceived += 1;
    if (decoded.otherKey) this.counters.framesReceivedUnderOtherKey += 1;
    for (const payload of frame.messages) {
      let message: M;
      try {
        message = this.codec.decode(payload);
      } catch (error) {
        // From a peer holding the colony key: another build's message, or a bug. Counted, and told.
        this.messagesDropped["undecodable-message"] += 1;
        this.warn("undecodable message dropped", { remote: peerOf(connection), error: describe(error) });
        continue;
      }
      this.deliver(frame.sender, message);
      if (this.state !== "started") return;
    }
  }

  private receiveHello(connection: Connection, sender: Address, sequence: number, messages: number): void {
    if (sequence !== 0 || messages !== 0) {
      this.rejectFrame(connection, "malformed", "the first frame on a connection must be a hello");
      return;
    }
    if (connection.direction === "outbound") {
      if (sender !== connection.remote) {
        this.rejectFrame(
          connection,
          "sender-mismatch",
          `dialled ${connection.remote}, answered by ${sender}`,
        );
        return;
      }
      connection.helloReceived = true;
      connection.splitter.admitFrames();
      connection.sequenceReceived = 0;
      connection.clearTimer();
      this.counters.framesReceived += 1;
      const peer = this.peers.get(sender);
      if (peer !== undefined) peer.failedDials = 0;
      return;
    }
    const dialable = parseServerAddress(sender);
    if (sender === this.selfAddress || (dialable === null && !isClientAddress(sender))) {
      this.rejectFrame(connection, "sender-mismatch", `hello names ${sender}`);
      return;
    }
    let peer: Peer | null | undefined = this.peers.get(sender);
    if (peer === undefined) peer = this.addPeer(sender, dialable);
    if (peer === null) {
      connection.socket.destroy();
      return;
    }
    connection.helloReceived = true;
    connection.splitter.admitFrames();
    connection.sequenceReceived = 0;
    connection.remote = sender;
    connection.dialer = sender;
    connection.clearTimer();
    this.counters.framesReceived += 1;
    peer.failedDials = 0;
    this.writeHello(connection, sender);
    this.attach(peer, connection);
  }

  // ---- warnings

  private warn(message: string, fields: Readonly<Record<string, string | number>>): void {
    if (this.warnSink === undefined) return;
    const nowMs = performance.now();
    if (nowMs - this.warningWindowStartMs >= 1000) {
      this.warningWindowStartMs = nowMs;
      this.warningsInWindow = 0;
    }
    if (this.warningsInWindow >= this.bounds.warningsPerSecondMax) {
      this.counters.warningsSuppressed += 1;
      return;
    }
    this.warningsInWindow += 1;
    this.warnSink(message, fields);
  }
}

/**
 * Who is at the other end of a connection, for a log line: the peer's address once its hello
 * named it, else the socket's address (a client, or a sender whose hello was refused).
 */
function peerOf(connection: Connection): string {
  if (connection.remote !== null) return connection.remote;
  const { remoteAddress, remotePort } = connection.socket;
  if (remoteAddress === undefined) return "unknown";
  const host = remoteAddress.includes(":") ? `[${remoteAddress}]` : remoteAddress;
  return `${host}:${remotePort ?? "?"} (before its hello)`;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
