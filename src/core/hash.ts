/**
 * A fast, non-cryptographic 64-bit running hash (two independent 32-bit lanes). Used for
 * trace hashes and state digests that must be identical across runs and machines.
 */
export class RunningHash {
  private h1 = 0x811c9dc5;
  private h2 = 0x01000193 ^ 0x5bd1e995;

  addNumber(value: number): this {
    // Hash the exact float64 bits so that every distinct number changes the digest.
    if (Number.isInteger(value) && Math.abs(value) < 2 ** 31) {
      this.mix(value | 0);
    } else {
      const text = String(value);
      for (let i = 0; i < text.length; i++) this.mix(text.charCodeAt(i));
    }
    return this;
  }

  addString(text: string): this {
    this.mix(text.length);
    for (let i = 0; i < text.length; i++) this.mix(text.charCodeAt(i));
    return this;
  }

  addBytes(bytes: Uint8Array): this {
    this.mix(bytes.length);
    for (let i = 0; i < bytes.length; i++) this.mix(bytes[i] as number);
    return this;
  }

  private mix(word: number): void {
    this.h1 = Math.imul(this.h1 ^ word, 0x01000193) >>> 0;
    this.h2 = Math.imul(this.h2 ^ ((word << 7) | (word >>> 25)), 0x5bd1e995) >>> 0;
    this.h2 = (this.h2 ^ (this.h2 >>> 15)) >>> 0;
  }

  digest(): string {
    return this.h1.toString(16).padStart(8, "0") + this.h2.toString(16).padStart(8, "0");
  }
}

export function hashBytes(bytes: Uint8Array): string {
  return new RunningHash().addBytes(bytes).digest();
}

export const fnvOffset = 0x811c9dc5;

/** FNV-1a over the UTF-16 code units of `text`, continuing from `hash` (start: fnvOffset). */
export function fnv1a(text: string, hash: number = fnvOffset): number {
  let h = hash;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** murmur3's final mix of a 32-bit word: every input bit moves about half of the output's. */
export function fmix32(word: number): number {
  let h = word;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
