/**
 * The admin port's HTTP plumbing, apart from what it serves (server-process.ts):
 * - a bounded number of connections, where a new connection displaces the one idle longest
 *   (between requests, or still sending its first) rather than being refused: connections left
 *   open by anyone cannot keep a health check or a scrape out;
 * - request targets parsed without throwing: a malformed one is a 400, `//host/healthz` a 404;
 * - request bodies bounded, with a 413 sent before the rest is discarded;
 * - failures of the handler answered 500 and logged at a bounded rate, so that requests nobody
 *   authenticated cannot fill the disk with log lines.
 */
import {
  createServer,
  type Server as HttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import type { Socket } from "node:net";

/** A request refused with an HTTP status and a message for its body. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

export interface AdminHttpOptions {
  /** Connections open at once; one more displaces the longest idle, or is closed when none is idle. */
  readonly connectionsMax: number;
  /** Serves one request; `url` is its parsed target (path and query). */
  readonly handle: (request: IncomingMessage, response: ServerResponse, url: URL) => Promise<void>;
  /** Where failures of `handle` are logged, at most `errorsPerSecondMax` a second. */
  readonly logError: (message: string, fields: Record<string, string | number>) => void;
  readonly errorsPerSecondMax?: number;
  /** A request's headers must arrive within this (default 5 s), the whole request within 10 s. */
  readonly headersTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
}

/** Counts of what the admin port refused or displaced (for /metrics). */
export interface AdminHttpStats {
  connectionsDisplaced: number;
  connectionsRefused: number;
  errorsLogged: number;
  errorsNotLogged: number;
}

/** Longest request target echoed in a log line or an answer. */
const targetEchoMax = 120;

/** Writes a whole answer: JSON bodies end with a newline. */
export function reply(
  response: ServerResponse,
  statusCode: number,
  body: unknown,
  type = "application/json",
): void {
  const text = type === "application/json" ? `${JSON.stringify(body)}\n` : String(body);
  response.writeHead(statusCode, { "content-type": type, "content-length": Buffer.byteLength(text) });
  response.end(text);
}

/**
 * The target of a request as a URL of path and query, or null when it is not an origin-form
 * target (`/path?query`): absolute forms, `*`, and `//authority/...`, which a URL parser would
 * read as a host, are refused rather than served as the path they end with.
 */
export function requestTarget(raw: string | undefined): URL | null {
  if (raw === undefined || !raw.startsWith("/") || raw.startsWith("//")) return null;
  try {
    return new URL(raw, "http://admin");
  } catch {
    return null;
  }
}

/** The target as a log line or an answer shows it (cut; Node's parser refuses control characters). */
export function shownTarget(raw: string | undefined): string {
  const text = raw ?? "";
  return text.length <= targetEchoMax ? text : `${text.slice(0, targetEchoMax)}...`;
}

/**
 * The request's body as JSON, read up to `bytesMax`. Rejects with HttpError 413 as soon as the
 * body is longer (what follows is discarded once the answer is sent), 400 if it is not JSON.
 */
export function readJsonBody(request: IncomingMessage, bytesMax: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const declared = Number(request.headers["content-length"] ?? 0);
    if (declared > bytesMax) {
      reject(new HttpError(413, `the request body is ${declared} bytes; at most ${bytesMax} are taken`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    request.on("data", (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > bytesMax) {
        over = true;
        chunks.length = 0;
        reject(
          new HttpError(413, `the request body is over ${bytesMax} bytes; at most ${bytesMax} are taken`),
        );
        return;
      }
      chunks.push(chunk);
    });
    request.on("end", () => {
      if (over) return;
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch {
        reject(new HttpError(400, "the request body is not JSON"));
      }
    });
    request.on("error", reject);
  });
}

export function adminHttpServer(options: AdminHttpOptions): { server: HttpServer; stats: AdminHttpStats } {
  const stats: AdminHttpStats = {
    connectionsDisplaced: 0,
    connectionsRefused: 0,
    errorsLogged: 0,
    errorsNotLogged: 0,
  };
  const errorsPerSecondMax = options.errorsPerSecondMax ?? 10;
  let windowStartMs = Number.NEGATIVE_INFINITY;
  let errorsInWindow = 0;
  const logError = (message: string, fields: Record<string, string | number>): void => {
    const nowMs = performance.now();
    if (nowMs - windowStartMs >= 1000) {
      windowStartMs = nowMs;
      errorsInWindow = 0;
    }
    if (errorsInWindow >= errorsPerSecondMax) {
      stats.errorsNotLogged += 1;
      return;
    }
    errorsInWindow += 1;
    stats.errorsLogged += 1;
    options.logError(message, fields);
  };

  const requestTimeout = options.requestTimeoutMs ?? 10_000;
  const server = createServer(
    {
      headersTimeout: Math.min(options.headersTimeoutMs ?? 5_000, requestTimeout),
      requestTimeout,
      keepAliveTimeout: 5_000,
      // How often Node looks for requests past their timeouts (its default is 30 s).
      connectionsCheckingInterval: 1_000,
    },
    (request, response) => {
      track(request, response);
      const url = requestTarget(request.url);
      if (url === null) {
        reply(response, 400, {
          error: `the request target ${JSON.stringify(shownTarget(request.url))} is not a path; try /healthz, /metrics, /status or /cells`,
        });
        return;
      }
      options.handle(request, response, url).catch((error: unknown) => {
        if (error instanceof HttpError) {
          if (!response.headersSent) {
            response.setHeader("connection", "close");
            reply(response, error.statusCode, { error: error.message });
          }
          return;
        }
        logError("admin request failed", { path: shownTarget(request.url), error: String(error) });
        if (!response.headersSent) reply(response, 500, { error: "internal error; see the server's log" });
      });
    },
  );

  // Responses in progress per connection; the idle ones (none in progress) in the order they
  // became idle, the first the longest.
  const inProgress = new Map<Socket, number>();
  const idle = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    if (inProgress.size >= options.connectionsMax) {
      const longest = idle.values().next();
      if (longest.done === true) {
        stats.connectionsRefused += 1;
        socket.destroy();
        return;
      }
      stats.connectionsDisplaced += 1;
      idle.delete(longest.value);
      inProgress.delete(longest.value);
      longest.value.destroy();
    }
    inProgress.set(socket, 0);
    idle.add(socket);
    socket.once("close", () => {
      inProgress.delete(socket);
      idle.delete(socket);
    });
  });
  function track(request: IncomingMessage, response: ServerResponse): void {
    const socket = request.socket;
    const count = inProgress.get(socket);
    if (count === undefined) return;
    inProgress.set(socket, count + 1);
    idle.delete(socket);
    response.once("close", () => {
      const open = inProgress.get(socket);
      // A connection closed (and forgotten) before its response.
      if (open === undefined) return;
      const left = open - 1;
      inProgress.set(socket, left);
      if (left === 0 && !socket.destroyed) idle.add(socket);
    });
  }
  return { server, stats };
}
