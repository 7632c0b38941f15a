/**
 * What clients and servers say to each other about a cell (docs/PROTOCOL.md, "Client protocol").
 */
import type { CellKey, NodeId, ServerId } from "../core/index.ts";
import type { MembershipChange, MembershipResult, ReplicaStatus } from "../paxos/index.ts";
import type { Command, CommandResult, Transaction, TxnResult } from "./types.ts";

export type RequestBody =
  /** A transaction or lease operation: goes through the log, applies exactly once per session. */
  | { readonly type: "command"; readonly command: Command; readonly leaderUnresponsive: boolean }
  /** A read-only transaction confirmed by read-index on the leader. */
  | {
      readonly type: "read";
      readonly consistency: "linearizable";
      readonly txn: Transaction;
      readonly leaderUnresponsive: boolean;
    }
  /** A read-only transaction from any node whose applied index reaches the session watermark. */
  | {
      readonly type: "read";
      readonly consistency: "eventual";
      readonly txn: Transaction;
      readonly watermark: number;
    }
  /** A membership change (control plane). */
  | { readonly type: "change"; readonly change: MembershipChange }
  | { readonly type: "describe" };

export interface ClientRequest {
  readonly kind: "request";
  /** Chosen by the client, echoed in the response. */
  readonly id: number;
  readonly cellKey: CellKey;
  readonly body: RequestBody;
}

export type ErrorCode =
  /** The server or cell is at a queue limit. Retry after a backoff. */
  | "overloaded"
  /** This server hosts no node of the cell and knows nothing about where it went. */
  | "unknown_cell"
  /** The cell met a log entry this build cannot apply; it stays stalled until upgraded. */
  | "stalled"
  /** The node has not applied up to the session watermark yet: try another node or later. */
  | "behind"
  /** The request is malformed or breaks a limit; retrying will not help. */
  | "invalid"
  /** The node's stored state failed a checksum: it must catch up before serving. */
  | "faulty";

export type ResponseBody =
  | { readonly type: "result"; readonly result: CommandResult; readonly index: number }
  | { readonly type: "read"; readonly result: TxnResult; readonly index: number }
  | { readonly type: "membership"; readonly result: MembershipResult; readonly index: number }
  | {
      readonly type: "redirect";
      /** The leader to try, if known. */
      readonly leader: NodeId | null;
      /** The cell's members, when this node is a forwarding pointer. */
      readonly members: readonly NodeId[] | null;
      readonly epoch: number | null;
      readonly reason: string;
    }
  | { readonly type: "error"; readonly code: ErrorCode; readonly message: string }
  | { readonly type: "status"; readonly status: ReplicaStatus };

export interface ClientResponse {
  readonly kind: "response";
  readonly id: number;
  readonly cellKey: CellKey;
  readonly body: ResponseBody;
  /**
   * Set on an answer the server passed back from its cell's leader, to which it relayed a request
   * marked `leaderUnresponsive`: the leader's server. The client sends the cell's next requests
   * there (unless it goes around that server for a while), not to the server that relayed.
   */
  readonly relayedFrom?: ServerId;
}

export function isRetryable(code: ErrorCode): boolean {
  return code === "overloaded" || code === "behind" || code === "faulty" || code === "unknown_cell";
}
