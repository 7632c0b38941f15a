/**
 * How the server's Node.js process is started.
 *
 * - `--max-semi-space-size=64`: a server hosting thousands of cells allocates a few kilobytes per
 *   commit (messages, log entries, results) that die within a few rounds. With V8's default
 *   nursery (16 MiB semi-spaces) the objects of thousands of cells in flight at once outlive it,
 *   are copied into the old generation and die there, which costs more than the protocol work
 *   itself. A 64 MiB semi-space lets them die young. `npm run bench:cell` measures the pure
 *   protocol path both ways (docs/BENCHMARK-LOG.md).
 * - `--min-semi-space-size=16`: the young generation starts at 16 MiB and never shrinks below it
 *   (32 MiB of memory with its two halves). Under one client's writes V8 otherwise keeps it at a
 *   few MiB, so each server scavenged several times a second, and four servers are on every
 *   write's path. Six alternating pairs of `npm run bench -- latency`: write p99 0.60-0.93 times
 *   (medians 2.92 against 4.13 ms), server CPU per write 0.75-1.02 times; `throughput` alike
 *   or better (six pairs, 0.78-1.51 times the writes/s; docs/BENCHMARK-LOG.md).
 * - `--expose-gc`: a quiet server asks for one compacting full collection after a burst grew its
 *   heap or evicted many nodes (IdleCollector); V8 alone would keep the burst's garbage, and the
 *   heap grown for it, while nothing allocates.
 * - `--no-minor-gc-task`: V8 collects the young generation only when an allocation finds it full,
 *   never from the task it otherwise schedules once the young generation is 80% full. Measured on
 *   one client's writes to a 7-process colony: with the task each scavenge kept 0.6-2.5 MB alive
 *   and paused a server 3-11 ms; without it 0.1 MB and 1.7-2.0 ms. Write p99 was 0.77-0.89 times,
 *   p50 0.87-0.97 times, and throughput the same or better (docs/BENCHMARK-LOG.md).
 *
 * `bin/physalia.js` names the same flags on its first line (test/binary.test.ts keeps the two
 * equal); whoever starts a server with `node` directly passes them itself.
 */
export const serverNodeFlags: readonly string[] = Object.freeze([
  "--max-semi-space-size=64",
  "--min-semi-space-size=16",
  "--expose-gc",
  "--no-minor-gc-task",
]);

/**
 * The server flags a process was started without, looking at its command line (`execArgv`:
 * `process.execArgv`) and NODE_OPTIONS. A server runs without them, with V8's default collector
 * settings; `physalia server` warns in its log. A flag given with another value
 * (`--max-semi-space-size=32`) counts as given: whoever started the process chose it.
 */
export function missingServerNodeFlags(execArgv: readonly string[], nodeOptions = ""): string[] {
  const name = (flag: string): string => (flag.split("=")[0] as string).replace(/_/g, "-");
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].map(name));
  return serverNodeFlags.filter((flag) => !given.has(name(flag)));
}
