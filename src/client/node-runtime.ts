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
