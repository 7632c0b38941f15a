import { describe, expect, it } from "vitest";
import { placeCell, rendezvousScore, type ServerPlace, TopologyDiscovery } from "./topology.ts";

const colony: ServerPlace[] = Array.from({ length: 9 }, (_, i) => ({
  id: `s${i + 1}`,
  rack: `r${(i % 3) + 1}`,
  power: `p${(Math.floor(i / 3) % 3) + 1}`,
}));

describe("topology placement", () => {
  it("gives every key the same members every time, spread over racks and power domains", () => {
    const spreads = new Set<string>();
    for (let i = 0; i < 500; i++) {
      const members = placeCell(`vol-${i}`, colony, 7);
      expect(placeCell(`vol-${i}`, [...colony].reverse(), 7)).toEqual(members);
      expect(new Set(members).size).toBe(7);
      for (const field of ["rack", "power"] as const) {
        const counts = new Map<string, number>();
        for (const id of members) {
          const place = colony.find((s) => s.id === id) as ServerPlace;
          counts.set(place[field], (counts.get(place[field]) ?? 0) + 1);
        }
        expect(Math.max(...counts.values())).toBeLessThanOrEqual(3);
      }
      spreads.add([...members].sort().join(","));
    }
    // Different keys land on different sets of servers (few sets satisfy the spread with 9 servers).
    expect(spreads.size).toBeGreaterThanOrEqual(8);
  });

  it("gives every server its share of cells, and leads the ranking of as many", () => {
    const held = new Map<string, number>();
    const first = new Map<string, number>();
    const cells = 9_000;
    for (let i = 0; i < cells; i++) {
      for (const id of placeCell(`vol-${i}`, colony, 7)) held.set(id, (held.get(id) ?? 0) + 1);
      const ranked = [...colony].sort(
        (a, b) => rendezvousScore(`vol-${i}`, a.id) - rendezvousScore(`vol-${i}`, b.id),
      );
      const top = (ranked[0] as ServerPlace).id;
      first.set(top, (first.get(top) ?? 0) + 1);
    }
    // 7,000 cells each and 1,000 first places each on average; a binomial spread stays within
    // +-5% and +-15% of them.
    for (const { id } of colony) {
      expect(held.get(id), id).toBeGreaterThan(6_650);
      expect(held.get(id), id).toBeLessThan(7_350);
      expect(first.get(id), id).toBeGreaterThan(850);
      expect(first.get(id), id).toBeLessThan(1_150);
    }
  });

  it("relaxes the spread only when the topology cannot satisfy it", () => {
    const oneRack = colony.map((s) => ({ ...s, rack: "r1" }));
    expect(placeCell("k", oneRack, 7)).toHaveLength(7);
    expect(() => placeCell("k", colony.slice(0, 5), 7)).toThrow(/needs 7 servers/);
  });

  it("prefers members learned from the cell, newest epoch first", () => {
    const discovery = new TopologyDiscovery(colony, 7);
    const computed = discovery.members("k");
    expect(computed).toHaveLength(7);
    discovery.learned("k", ["s1", "s2", "s3"], 5);
    discovery.learned("k", ["s4"], 4);
    expect(discovery.members("k")).toEqual(["s1", "s2", "s3"]);
    expect(new TopologyDiscovery(colony.slice(0, 3), 7).members("k")).toBeNull();
  });
});
