/**
 * How the server's Node.js process is started.
 *
 * - `--max-semi-space-size=64`: a server hosting thousands of cells allocates a few kilobytes per
 *   commit (messages, log entries, results) that die within a few rounds. With V8's default
 *   nursery (16 MiB semi-spaces) the objects of thousands of cells in flight at once outlive it,
 *   are copied into the old generation and die there, which costs more than the protocol work
 *   itself. A 64 MiB semi-space lets them die young. `npm run bench:cell` measures the pure
 *   protocol path both ways (docs/BENCHMARKS.md).
 * - `--expose-gc`: a quiet server asks for a full collection after a burst grew its heap
 *   (IdleCollector); V8 alone would keep the burst's garbage while nothing allocates.
 * - `--compact-on-every-full-gc`: long-lived nodes and a burst's short-lived records are
 *   promoted together, so the burst leaves old-generation pages half empty; V8's own heuristics
 *   compact few of them, and a server left with 1,000,000 resident nodes kept about 40% of its
 *   old generation as free space. Full collections are rare on a server (the nursery absorbs the
 *   protocol's garbage), so compacting in each costs little.
 *
 * `bin/physalia.js` names the same flags on its first line (test/binary.test.ts keeps the two
 * equal); whoever starts a server with `node` directly passes them itself.
 */
export const serverNodeFlags: readonly string[] = Object.freeze([
  "--max-semi-space-size=64",
  "--expose-gc",
  "--compact-on-every-full-gc",
]);
