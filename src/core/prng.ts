/**
 * Seeded pseudo-random number generator (xoshiro128**, seeded through splitmix32).
 * Deterministic folders take randomness only from an instance of this class.
 */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0 || 0x9e3779b9;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
  }

  /**
   * A generator whose whole state (128 bits) is `seed`'s 16 bytes, for randomness that must not
   * repeat between processes (session ids): a 32-bit seed gives two of every 2^32 processes, and
   * so every pair among tens of thousands of clients with fair odds, the same stream.
   */
  static fromBytes(seed: Uint8Array): Prng {
    if (seed.length !== 16) throw new RangeError(`a Prng state is 16 bytes, not ${seed.length}`);
    const prng = new Prng(0);
    const view = new DataView(seed.buffer, seed.byteOffset, 16);
    const words = [0, 4, 8, 12].map((at) => view.getUint32(at, true));
    // xoshiro's one state it must never be in.
    if (words.every((word) => word === 0)) return prng;
    [prng.a, prng.b, prng.c, prng.d] = words as [number, number, number, number];
    return prng;
  }

  /** Uniform integer in [0, 2^52): two draws, every bit random (below() gives 32 random bits). */
  uint52(): number {
    return (this.nextUint32() & 0xfffff) * 4294967296 + this.nextUint32();
  }

  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform float in [0, 1). */
  float(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, bound). */
  below(bound: number): number {
    if (bound <= 1) return 0;
    return Math.floor(this.float() * bound);
  }

  /** Uniform integer in [low, high] inclusive. */
  between(low: number, high: number): number {
    return low + this.below(high - low + 1);
  }

  chance(probability: number): boolean {
    return probability > 0 && this.float() < probability;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("pick from an empty list");
    return items[this.below(items.length)] as T;
  }

  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }

  /** A child generator whose stream is independent of later draws from this one. */
  fork(): Prng {
    return new Prng(this.nextUint32());
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
