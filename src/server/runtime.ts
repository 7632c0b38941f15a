/**
 * How the server's Node.js process is started.
 *
 * - `--max-semi-space-size=64`: a server hosting thousands of cells allocates a few kilobytes per
 *   commit (messages, log entries, results) that die within a few rounds. With V8's default
 *   nursery (16 MiB semi-spaces) the objects of thousands of cells in flight at once outlive it,
 *   are copied into the old generation and die there, which costs more than the protocol work
 *   itself. A 64 MiB semi-space lets them die young. `npm run bench:cell` measures the pure
 *   protocol path both ways (docs/BENCHMARKS.md).
 * - `--expose-gc`: a quiet server asks for one compacting full collection after a burst grew its
 *   heap or evicted many nodes (IdleCollector); V8 alone would keep the burst's garbage, and the
 *   heap grown for it, while nothing allocates.
 *
 * `bin/physalia.js` names the same flags on its first line (test/binary.test.ts keeps the two
 * equal); whoever starts a server with `node` directly passes them itself.
 */
export const serverNodeFlags: readonly string[] = Object.freeze(["--max-semi-space-size=64", "--expose-gc"]);
