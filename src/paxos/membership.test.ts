import { describe, expect, it } from "vitest";
import {
  applyMembershipChange,
  initialMembership,
  MembershipInterner,
  pruneMembership,
} from "./membership.ts";
import type { MembershipState } from "./types.ts";

const seven = (prefix = "s") =>
  Array.from({ length: 7 }, (_, i) => ({ serverId: `${prefix}${i + 1}`, incarnation: i + 1 }));

describe("membership interner", () => {
  it("hands out one shared state for equal states", () => {
    const interner = new MembershipInterner();
    const a = interner.intern(initialMembership(seven()));
    const b = interner.intern(initialMembership(seven()));
    expect(b).toBe(a);
    expect(interner.size).toBe(1);
  });

  it("keeps states apart that differ in any field", () => {
    const base = initialMembership(seven());
    const configuration = base.configurations[0];
    if (configuration === undefined) throw new Error("no configuration");
    const variants: MembershipState[] = [
      base,
      { ...base, epoch: 2 },
      { ...base, nextIncarnation: 9 },
      { ...base, configurations: [{ ...configuration, fromSlot: 2 }] },
      { ...base, configurations: [{ ...configuration, epoch: 3 }] },
      { ...base, configurations: [{ ...configuration, members: configuration.members.slice(1) }] },
      { ...base, configurations: [{ ...configuration, members: [...configuration.members].reverse() }] },
      initialMembership(seven().map((m) => ({ ...m, incarnation: m.incarnation + 10 }))),
      // Server ids that would run together without their lengths.
      initialMembership([
        { serverId: "a,1@1:b", incarnation: 1 },
        { serverId: "c", incarnation: 2 },
      ]),
      initialMembership([
        { serverId: "a", incarnation: 1 },
        { serverId: "b,2@1:c", incarnation: 2 },
      ]),
    ];
    const changed = applyMembershipChange(base, { add: "s8", remove: null }, 5);
    variants.push(changed.state, pruneMembership(changed.state, 100));
    const interner = new MembershipInterner();
    const interned = variants.map((state) => interner.intern(state));
    expect(new Set(interned).size).toBe(variants.length);
    for (const [i, state] of interned.entries()) expect(state).toBe(variants[i]);
  });

  it("is bounded: when full it starts over, and what it handed out stays valid", () => {
    const interner = new MembershipInterner(3);
    const states = [1, 2, 3, 4].map((n) => ({ ...initialMembership(seven()), epoch: n }));
    for (const state of states) interner.intern(state);
    expect(interner.size).toBe(1);
    expect(interner.intern({ ...initialMembership(seven()), epoch: 4 })).toBe(states[3]);
    expect(states[0]?.epoch).toBe(1);
  });
});
