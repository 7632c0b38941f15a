/**
 * Servers are named by id ("s3") everywhere above the transport; on TCP they are dialled at
 * "host:port". This wrapper translates between the two with the colony's address book, and
 * passes every other address (clients') through unchanged.
 */
import type { Address, ServerId } from "../core/index.ts";
import type { TransportPort } from "./port.ts";

export class AddressBook {
  private readonly byId = new Map<ServerId, Address>();
  private readonly byAddress = new Map<Address, ServerId>();

  constructor(entries: Iterable<readonly [ServerId, Address]>) {
    for (const [id, address] of entries) {
      if (this.byId.has(id)) throw new RangeError(`server ${id} is listed twice in the address book`);
      if (this.byAddress.has(address))
        throw new RangeError(`address ${address} is given to both ${this.byAddress.get(address)} and ${id}`);
      this.byId.set(id, address);
      this.byAddress.set(address, id);
    }
  }

  addressOf(id: ServerId): Address {
    return this.byId.get(id) ?? id;
  }

  idOf(address: Address): ServerId | Address {
    return this.byAddress.get(address) ?? address;
  }
}

export class MappedTransport<M> implements TransportPort<M> {
  constructor(
    private readonly inner: TransportPort<M>,
    private readonly book: AddressBook,
  ) {}

  get address(): Address {
    return this.book.idOf(this.inner.address);
  }

  send(to: Address, message: M): void {
    this.inner.send(this.book.addressOf(to), message);
  }

  flush(): void {
    this.inner.flush();
  }

  onMessage(handler: (from: Address, message: M) => void): void {
    this.inner.onMessage((from, message) => handler(this.book.idOf(from), message));
  }
}

/** A transport that reports lost peers (TcpTransport.onPeerLost), by server id. */
export function onServerLost(
  transport: { onPeerLost(handler: (peer: Address, refused: boolean) => void): void },
  book: AddressBook,
  handler: (serverId: ServerId, refused: boolean) => void,
): void {
  transport.onPeerLost((peer, refused) => handler(book.idOf(peer), refused));
}
