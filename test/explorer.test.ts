/**
 * The exhaustive explorer over small cells, and proof that it catches planted protocol bugs.
 * Message loss needs no separate enumeration: a lost message is one never delivered, and every
 * state reachable with losses is reachable by never choosing to deliver those messages.
 */
import { describe, expect, it } from "vitest";
import {
  deferredAccepts,
  duellingProposers,
  explore,
  membershipActivation,
  scenarios,
} from "../src/sim/explorer.ts";

describe("exhaustive explorer", () => {
  // One test per scenario, each with room for a slow machine: the largest takes about a minute.
  for (const scenario of scenarios) {
    it(`explores every schedule of scenario ${scenario.name} to its stated depth with no violation`, {
      timeout: 600_000,
    }, () => {
      const report = explore(scenario);
      expect(report.complete, scenario.name).toBe(true);
      expect(report.violations, `${scenario.name}: ${report.firstViolation?.message}`).toBe(0);
      expect(report.schedules).toBeGreaterThan(10_000);
    });
  }

  it("catches an acceptor that accepts a lower ballot (two values chosen for one slot)", () => {
    const report = explore(duellingProposers, { bugs: { acceptLowerBallot: true }, stopAtViolation: true });
    expect(report.violations).toBeGreaterThan(0);
    expect(report.firstViolation?.message).toMatch(/chosen twice/);
  });

  it("catches an acceptor that accepts a lower ballot where accepts are deferred", () => {
    const report = explore(deferredAccepts, { bugs: { acceptLowerBallot: true }, stopAtViolation: true });
    expect(report.violations).toBeGreaterThan(0);
    expect(report.firstViolation?.message).toMatch(/chosen twice/);
  });

  it("catches a follower that takes a commit index for an entry another ballot proposed", () => {
    const report = explore(duellingProposers, { bugs: { commitAnyBallot: true }, stopAtViolation: true });
    expect(report.violations).toBeGreaterThan(0);
    expect(report.firstViolation?.message).toMatch(/applied \[A\] at slot 1, chosen \[B\]|chosen twice/);
  });

  it("catches a membership change applied at i instead of i + alpha", () => {
    const report = explore(membershipActivation, {
      bugs: { membershipWithoutDelay: true },
      stopAtViolation: true,
    });
    expect(report.violations).toBeGreaterThan(0);
    expect(report.firstViolation?.message).toMatch(/chosen twice/);
  });
});
