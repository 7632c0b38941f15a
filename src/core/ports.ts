/** Ports through which time and randomness enter deterministic code. */

/** A server's clock, in milliseconds. Simulated clocks may drift and jump. */
export interface Clock {
  nowMs(): number;
}
