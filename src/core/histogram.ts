/**
 * Counts of durations by bucket, for a Prometheus histogram: counts[i] holds the durations of at
 * most boundsMs[i] and more than the bound before; the last count, those longer than every bound.
 */
export class DurationHistogram {
  private readonly counts: number[];
  private sum = 0;

  constructor(readonly boundsMs: readonly number[]) {
    this.counts = new Array(boundsMs.length + 1).fill(0);
  }

  record(ms: number): void {
    this.sum += ms;
    let bucket = 0;
    while (bucket < this.boundsMs.length && ms > (this.boundsMs[bucket] as number)) bucket += 1;
    this.counts[bucket] = (this.counts[bucket] as number) + 1;
  }

  /** A copy of the counts and their sum, in milliseconds. */
  snapshot(): { readonly counts: readonly number[]; readonly sumMs: number } {
    return { counts: [...this.counts], sumMs: this.sum };
  }
}
