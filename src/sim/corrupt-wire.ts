/**
 * Damaged messages that still decode. A colony authenticates every frame, so bytes damaged on
 * the wire never reach a codec; what can is a peer or client with a bug, or of another build,
 * whose messages are well-formed but wrong. A server or client must take any of those without
 * throwing: the codec refuses what does not decode, and what decodes is handled like any other
 * message. With this codec in a simulated colony, a share of delivered messages is damaged (bits
 * flipped, bytes changed, numbers made large, cut short or lengthened); what no longer decodes is dropped, as the
 * transport drops it, and what decodes is delivered.
 *
 * Damaged messages from a peer that passes authentication are outside what Paxos tolerates (a
 * peer that lies), so a run with them checks only that nothing throws and that the colony goes on
 * running; its safety checks are not expected to hold.
 */
import type { Prng } from "../core/index.ts";
import { droppedOnWire, type MessageCodec } from "./kernel.ts";

export interface WireDamage {
  /** Messages delivered damaged. */
  damaged: number;
  /** Of those, the ones that still decoded and were handed to a server or client. */
  decoded: number;
  /** Messages sent intact that their receiver cannot decode, as damage elsewhere led to. */
  misdirected: number;
}

export function damagingCodec<M>(
  codec: MessageCodec<M>,
  random: Prng,
  rate: number,
  tally: WireDamage,
): MessageCodec<M> {
  return {
    encode: (message) => codec.encode(message),
    decode: (bytes) => {
      if (!random.chance(rate)) {
        try {
          return codec.decode(bytes);
        } catch {
          // Sent where no damaged message could have sent it: to a client's address, say, as a
          // server id in a damaged message became. The transport drops what it cannot decode.
          tally.misdirected += 1;
          return droppedOnWire;
        }
      }
      tally.damaged += 1;
      try {
        const message = codec.decode(damage(bytes, random));
        tally.decoded += 1;
        return message;
      } catch {
        return droppedOnWire;
      }
    },
  };
}

/** A copy of `bytes` with one random kind of damage; the original is left as it was. */
export function damage(bytes: Uint8Array, random: Prng): Uint8Array {
  const copy = Uint8Array.from(bytes);
  if (copy.length === 0) return Uint8Array.of(random.below(256));
  const at = random.below(copy.length);
  switch (random.below(6)) {
    case 0:
      copy[at] = (copy[at] as number) ^ (1 << random.below(8));
      return copy;
    case 1:
      copy[at] = (copy[at] as number) ^ (1 + random.below(255));
      return copy;
    case 2:
      // A varint or length that ends early or runs on: its continuation bit turned over.
      copy[at] = (copy[at] as number) ^ 0x80;
      return copy;
    case 3:
      return copy.subarray(0, at);
    case 4: {
      // A byte replaced by a large varint: a number, a length or a count far out of range.
      const large = [0xff, 0xff, 0xff, 0xff, 1 + random.below(0x7f)];
      const longer = new Uint8Array(copy.length - 1 + large.length);
      longer.set(copy.subarray(0, at));
      longer.set(large, at);
      longer.set(copy.subarray(at + 1), at + large.length);
      return longer;
    }
    default: {
      const longer = new Uint8Array(copy.length + 1 + random.below(16));
      longer.set(copy);
      for (let i = copy.length; i < longer.length; i++) longer[i] = random.below(256);
      return longer;
    }
  }
}
