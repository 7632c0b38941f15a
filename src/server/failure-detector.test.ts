import { describe, expect, it } from "vitest";
import { limits } from "../core/index.ts";
import { FailureDetector } from "./failure-detector.ts";

describe("failure detector", () => {
  it("trusts peers at start, suspects silence, and clears on the next message", () => {
    const detector = new FailureDetector("s1", 0);
    expect(detector.isAlive("s2", limits.suspectAfterMs - 1)).toBe(true);
    expect(detector.isAlive("s2", limits.suspectAfterMs)).toBe(false);
    const later = limits.suspectAfterMs * 2;
    detector.heard("s2", later);
    expect(detector.isAlive("s2", later + limits.suspectAfterMs - 1)).toBe(true);
    expect(detector.suspected(["s2", "s3"], later)).toEqual(["s3"]);
    expect(detector.isAlive("s1", 1e9)).toBe(true);
  });

  it("suspects a peer whose address refused a connection until it is heard from again", () => {
    const detector = new FailureDetector("s1", 0);
    // Never heard from (a colony starting): a refusal alone does not make it suspected.
    detector.refused("s2");
    expect(detector.isAlive("s2", 1)).toBe(true);
    detector.heard("s2", 10);
    detector.refused("s2");
    expect(detector.isAlive("s2", 11)).toBe(false);
    expect(detector.suspected(["s2", "s3"], 11)).toEqual(["s2"]);
    detector.heard("s2", 12);
    expect(detector.isAlive("s2", 13)).toBe(true);
    detector.refused("s1");
    expect(detector.isAlive("s1", 13)).toBe(true);
  });

  it("remembers at most its bound of servers, forgetting only those already suspected", () => {
    const detector = new FailureDetector("s1", 0, 3);
    const start = limits.suspectAfterMs * 2;
    for (const name of ["a", "b", "c"]) detector.heard(name, start);
    // Full of servers heard lately: a new name is not kept, and the others stay trusted.
    detector.heard("forged-1", start + 1);
    expect(detector.remembered).toBe(3);
    expect(detector.notRemembered).toBe(1);
    expect(detector.isAlive("a", start + 2)).toBe(true);
    // A suspicion period later, with only "a" heard again: "b" and "c" make room, still suspected.
    const later = start + 1 + limits.suspectAfterMs;
    detector.heard("a", later);
    detector.refused("b");
    detector.heard("d", later);
    expect(detector.remembered).toBe(2);
    expect(detector.suspected(["a", "b", "c", "d"], later)).toEqual(["b", "c"]);
    // A flood of new names costs one sweep per period and never grows the table past its bound.
    for (let i = 0; i < 1_000; i++) detector.heard(`forged-${i}`, later + 1);
    expect(detector.remembered).toBe(3);
    expect(detector.isAlive("a", later + 1)).toBe(true);
    expect(detector.isAlive("d", later + 1)).toBe(true);
  });
});
