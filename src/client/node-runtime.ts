/**
 * The scheduler port on Node.js: real timers, `setImmediate` for deferred work, and a clock that
 * never goes back (the process's monotonic clock, anchored at wall time when it started).
 */
import type { Scheduler, TimerHandle } from "../core/index.ts";

interface NodeTimerHandle extends TimerHandle {
  timer: ReturnType<typeof setTimeout> | null;
}

export class NodeScheduler implements Scheduler {
  private nextId = 1;
  private readonly origin = performance.timeOrigin;

  /**
   * @param keepAlive whether armed timers keep the process running. Servers say yes; clients say
   *   no, so a program that is done with its client exits even while a retry timer is armed.
   */
  constructor(private readonly keepAlive = true) {}

  nowMs(): number {
    return this.origin + performance.now();
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const handle: NodeTimerHandle = { id: this.nextId++, timer: null };
    handle.timer = setTimeout(
      () => {
        handle.timer = null;
        callback();
      },
      Math.max(0, delayMs),
    );
    if (!this.keepAlive) handle.timer.unref();
    return handle;
  }

  clearTimer(handle: TimerHandle): void {
    const timer = (handle as NodeTimerHandle).timer;
    if (timer !== null && timer !== undefined) clearTimeout(timer);
    (handle as NodeTimerHandle).timer = null;
  }

  defer(callback: () => void): void {
    setImmediate(callback);
  }
}

/**
 * Keeps the process running while `hold(true)` is in force: one referenced timer that does
 * nothing. The client's own timers do not keep the process alive (see NodeScheduler), so without
 * this a program awaiting an operation while no connection is open (every server down) would
 * exit before the operation ended, its promise never settled.
 */
export class ProcessHold {
  private timer: ReturnType<typeof setInterval> | null = null;

  hold(on: boolean): void {
    if (on && this.timer === null) {
      // The longest interval Node.js takes (about 24.8 days); it only has to exist.
      this.timer = setInterval(() => {}, 2 ** 31 - 1);
    } else if (!on && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
}
