/**
 * The transport port. Messages to one destination sent in one turn travel together in one frame;
 * `flush()` ends the turn's frames. Delivery is best effort: messages may be lost, duplicated,
 * delayed or reordered, and the protocol above tolerates all of it.
 */
import type { Address } from "../core/index.ts";

export interface TransportPort<M> {
  readonly address: Address;
  send(to: Address, message: M): void;
  /** Send every message queued since the last flush. */
  flush(): void;
  /** Install the receiver of messages for `address`. */
  onMessage(handler: (from: Address, message: M) => void): void;
}
