import { describe, expect, it } from "vitest";
import { limits, type NodeId } from "../core/index.ts";
import { AcceptFanout, type HeldAccept } from "./fanout.ts";

const members: NodeId[] = ["a", "b", "c", "d", "e", "f", "g"].map((serverId, i) => ({
  serverId,
  incarnation: i + 1,
}));
const everyoneAlive = { isServerAlive: () => true };

/** Server ids of the members whose bits are set. */
function named(bits: number): string[] {
  return members.filter((_, i) => (bits & (1 << i)) !== 0).map((m) => m.serverId);
}

function bitsOf(...serverIds: string[]): number {
  return serverIds.reduce((bits, id) => bits | (1 << members.findIndex((m) => m.serverId === id)), 0);
}

describe("accept fan-out", () => {
  it("sends at once to the followers after the leader, as many as a majority needs", () => {
    const fanout = new AcceptFanout<string>(0);
    expect(named(fanout.atOnce(members, 0, everyoneAlive))).toEqual(["b", "c", "d"]);
    expect(named(fanout.atOnce(members, 5, everyoneAlive))).toEqual(["a", "b", "g"]); // g, a, b
    expect(named(new AcceptFanout<string>(1).atOnce(members, 0, everyoneAlive))).toEqual([
      "b",
      "c",
      "d",
      "e",
    ]);
    // A leader outside the configuration has no vote: a majority of followers.
    expect(named(fanout.atOnce(members, -1, everyoneAlive))).toEqual(["a", "b", "c", "d"]);
  });

  it("skips suspected followers, and sends to fewer when too few are alive", () => {
    const fanout = new AcceptFanout<string>(0);
    const alive = (ids: string[]) => ({ isServerAlive: (id: string) => ids.includes(id) });
    expect(named(fanout.atOnce(members, 0, alive(["b", "d", "e", "f", "g"])))).toEqual(["b", "d", "e"]);
    expect(named(fanout.atOnce(members, 0, alive(["c"])))).toEqual(["c"]);
  });

  it("demotes followers that missed a commit behind the others, and restores the oldest past the bound", () => {
    const fanout = new AcceptFanout<string>(0);
    const atOnce = fanout.atOnce(members, 0, everyoneAlive);
    // The slot committed with a, c, d and the deferred e: b had not voted.
    fanout.committed(members, 0, atOnce, bitsOf("a", "c", "d", "e"));
    expect(named(fanout.atOnce(members, 0, everyoneAlive))).toEqual(["c", "d", "e"]);
    fanout.committed(members, 0, bitsOf("c", "d", "e"), bitsOf("a", "d", "e", "f"));
    fanout.committed(members, 0, bitsOf("d", "e", "f"), bitsOf("a", "e", "f", "g"));
    // b, c, d demoted: three can be deferred in a cell of 7.
    expect(named(fanout.atOnce(members, 0, everyoneAlive))).toEqual(["e", "f", "g"]);
    fanout.committed(members, 0, bitsOf("e", "f", "g"), bitsOf("a", "b", "f", "g"));
    // e demoted too: b, the oldest, is back.
    expect(named(fanout.atOnce(members, 0, everyoneAlive))).toEqual(["b", "f", "g"]);
    expect(fanout.describe((n) => n.serverId)).toBe(":c,d,e:0");
    // Demoted followers still make up a majority when the others are suspected.
    const onlyDemoted = { isServerAlive: (id: string) => ["c", "d", "e"].includes(id) };
    expect(named(fanout.atOnce(members, 0, onlyDemoted))).toEqual(["c", "d", "e"]);
  });

  it("adds a follower while the leader's own vote comes after a deferred one", () => {
    const fanout = new AcceptFanout<string>(0);
    const atOnce = fanout.atOnce(members, 0, everyoneAlive);
    fanout.committed(members, 0, atOnce, bitsOf("b", "c", "d", "e")); // without a, with deferred e
    expect(named(fanout.atOnce(members, 0, everyoneAlive))).toEqual(["b", "c", "d", "e"]);
    // Committed by the followers sent at once, a still missing: no new evidence either way.
    fanout.committed(members, 0, bitsOf("b", "c", "d", "e"), bitsOf("b", "c", "d", "e"));
    expect(named(fanout.atOnce(members, 0, everyoneAlive))).toEqual(["b", "c", "d", "e"]);
    fanout.committed(members, 0, bitsOf("b", "c", "d", "e"), bitsOf("a", "b", "c", "d"));
    expect(named(fanout.atOnce(members, 0, everyoneAlive))).toEqual(["b", "c", "d"]);
  });

  it("holds accepts in slot order up to its bound and releases them once", () => {
    const fanout = new AcceptFanout<string>(0);
    const later = members.slice(4);
    expect(fanout.releaseAtMs).toBe(Number.POSITIVE_INFINITY);
    fanout.hold(1, "v1", later, 101);
    const copy = fanout.copy();
    for (let slot = 2; slot <= limits.deferredSlotsMax; slot++) {
      expect(fanout.full()).toBe(false);
      fanout.hold(slot, `v${slot}`, later, 100 + slot);
    }
    expect(fanout.full()).toBe(true);
    expect(fanout.releaseAtMs).toBe(101 + limits.acceptDeferMs); // from the first held
    expect(fanout.holdsFor(members[4] as NodeId)).toBe(true);
    expect(fanout.holdsFor(members[1] as NodeId)).toBe(false);
    const released: HeldAccept<string>[] = [];
    fanout.release((h) => released.push(h));
    expect(released.map((h) => h.slot)).toEqual(
      Array.from({ length: limits.deferredSlotsMax }, (_, i) => i + 1),
    );
    expect(fanout.full()).toBe(false);
    expect(fanout.releaseAtMs).toBe(Number.POSITIVE_INFINITY);
    fanout.release(() => expect.unreachable("nothing is held twice"));
    // The copy kept what was held when it was made, and only that.
    expect(copy.describe((n) => n.serverId)).toBe("1>e+f+g::0");
  });
});
