/** Ports through which time, timers and deferral enter deterministic code. */

/** A server's or client's clock, in milliseconds. Simulated clocks may be offset and drift. */
export interface Clock {
  nowMs(): number;
}

export interface TimerHandle {
  readonly id: number;
}

/**
 * Timers and deferred work. Production: node timers and setImmediate. Simulation: events on the
 * simulator's queue. Callbacks never run synchronously inside the call that scheduled them.
 */
export interface Scheduler extends Clock {
  /** Run `callback` once after `delayMs` of this scheduler's clock. */
  setTimer(delayMs: number, callback: () => void): TimerHandle;
  clearTimer(handle: TimerHandle): void;
  /** Run `callback` after the current turn, before any timer that is due later. */
  defer(callback: () => void): void;
}
