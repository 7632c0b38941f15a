/**
 * Exhaustive exploration of small cells: every order in which in-flight messages are delivered,
 * every message lost, and a bounded number of timeouts, up to a stated depth. Each schedule is
 * replayed from the start (replicas are deterministic), and states already explored with at
 * least as much depth left are not explored again. After every step the checkers run: one value
 * per slot and identical applied sequences (prefixes) on every node.
 */
import { limits } from "../core/index.ts";
import type { PaxosMessage, PlantedBugs } from "../paxos/index.ts";
import { messageKey, PaxosCluster } from "./paxos-cluster.ts";

type Choice = { readonly kind: "deliver" | "drop"; readonly index: number } | { readonly kind: "timeout" };

export interface ExploreScenario {
  readonly name: string;
  readonly description: string;
  /** Build the starting state (deterministically). */
  setup(bugs: PlantedBugs | null): PaxosCluster;
  /** Steps per schedule. */
  readonly depth: number;
  /** Timeouts (every node's retransmission and backoff timers firing) allowed per schedule. */
  readonly timeoutsMax: number;
  /** Messages that may be lost per schedule. */
  readonly lossesMax: number;
}

export interface ExploreReport {
  readonly scenario: string;
  readonly depth: number;
  /** Schedules executed to their end (depth reached or nothing left to do). */
  readonly schedules: number;
  /** Distinct system states reached. */
  readonly states: number;
  readonly transitions: number;
  readonly violations: number;
  /** The first violation found: what failed and the schedule that reproduces it. */
  readonly firstViolation: { readonly message: string; readonly schedule: string } | null;
  readonly complete: boolean;
}

export interface ExploreOptions {
  readonly bugs?: PlantedBugs | null;
  /** Stop after this many transitions (the report says whether it finished). */
  readonly transitionsMax?: number;
  /** Stop at the first violation. */
  readonly stopAtViolation?: boolean;
}

function apply(cluster: PaxosCluster, choice: Choice): void {
  switch (choice.kind) {
    case "deliver":
      cluster.deliver(choice.index);
      break;
    case "drop":
      cluster.drop(choice.index);
      break;
    case "timeout":
      cluster.advance(1000);
      break;
  }
}

function check(cluster: PaxosCluster): string | null {
  if (cluster.violations.length > 0) return cluster.violations[0] as string;
  return cluster.checkAppliedPrefixes();
}

function describeChoice(cluster: PaxosCluster, choice: Choice): string {
  if (choice.kind === "timeout") return "timeout";
  const m = cluster.network[choice.index];
  return `${choice.kind} ${m === undefined ? "?" : `${m.type} ${m.from.serverId}->${m.to.serverId}`}`;
}

interface Frame {
  readonly cluster: PaxosCluster;
  readonly depth: number;
  readonly timeouts: number;
  readonly losses: number;
  readonly schedule: string;
  /**
   * Sleep set (partial-order reduction): choices already explored from an earlier sibling that
   * commute with every step taken since, so exploring them here would only repeat states.
   */
  readonly sleep: ReadonlyMap<string, string>;
}

interface Candidate {
  readonly choice: Choice;
  readonly id: string;
  /** The node the choice affects; choices on different nodes commute. "*" affects all. */
  readonly target: string;
  readonly timeouts: number;
  readonly losses: number;
}

function sleepSubset(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  for (const key of a.keys()) if (!b.has(key)) return false;
  return true;
}

export function explore(scenario: ExploreScenario, options: ExploreOptions = {}): ExploreReport {
  const bugs = options.bugs ?? null;
  const transitionsMax = options.transitionsMax ?? 2_000_000;
  const seen = new Map<string, { remaining: number; sleep: ReadonlyMap<string, string> }>();
  let schedules = 0;
  let transitions = 0;
  let violations = 0;
  let firstViolation: ExploreReport["firstViolation"] = null;
  let complete = true;

  const stack: Frame[] = [
    { cluster: scenario.setup(bugs), depth: 0, timeouts: 0, losses: 0, schedule: "", sleep: new Map() },
  ];
  while (stack.length > 0) {
    if (transitions >= transitionsMax) {
      complete = false;
      break;
    }
    const frame = stack.pop() as Frame;
    const cluster = frame.cluster;
    const problem = check(cluster);
    if (problem !== null) {
      violations += 1;
      schedules += 1;
      if (firstViolation === null) firstViolation = { message: problem, schedule: frame.schedule };
      if (options.stopAtViolation ?? false) break;
      continue;
    }
    const remaining = scenario.depth - frame.depth;
    const key = `${frame.timeouts}/${frame.losses}\n${cluster.fingerprint()}`;
    const previous = seen.get(key);
    if (previous !== undefined && previous.remaining >= remaining && sleepSubset(previous.sleep, frame.sleep))
      continue;
    seen.set(key, { remaining, sleep: frame.sleep });
    const candidates: Candidate[] = [];
    if (remaining > 0) {
      const distinct = new Set<string>();
      cluster.network.forEach((message, index) => {
        // Identical messages in flight lead to identical states: try one of them.
        const id = messageKey(message);
        if (distinct.has(id)) return;
        distinct.add(id);
        const target = `${message.to.serverId}#${message.to.incarnation}`;
        candidates.push({
          choice: { kind: "deliver", index },
          id: `D${id}`,
          target,
          timeouts: frame.timeouts,
          losses: frame.losses,
        });
        if (frame.losses < scenario.lossesMax) {
          candidates.push({
            choice: { kind: "drop", index },
            id: `X${id}`,
            target: `msg:${id}`,
            timeouts: frame.timeouts,
            losses: frame.losses + 1,
          });
        }
      });
      if (frame.timeouts < scenario.timeoutsMax && cluster.nodes.some((n) => n.replica.wakeAtMs < Infinity)) {
        candidates.push({
          choice: { kind: "timeout" },
          id: "T",
          target: "*",
          timeouts: frame.timeouts + 1,
          losses: frame.losses,
        });
      }
    }
    const awake = candidates.filter((c) => !frame.sleep.has(c.id));
    if (awake.length === 0) {
      schedules += 1;
      continue;
    }
    // Explore in order; each later sibling sleeps on the earlier ones that commute with it.
    const children: Frame[] = [];
    const explored = new Map<string, string>(frame.sleep);
    for (const c of awake) {
      const sleep = new Map<string, string>();
      for (const [id, target] of explored) {
        if (commutes(target, c.target, id, c.id)) sleep.set(id, target);
      }
      const next = cluster.clone();
      const step = describeChoice(next, c.choice);
      apply(next, c.choice);
      transitions += 1;
      children.push({
        cluster: next,
        depth: frame.depth + 1,
        timeouts: c.timeouts,
        losses: c.losses,
        schedule: frame.schedule === "" ? step : `${frame.schedule}; ${step}`,
        sleep,
      });
      explored.set(c.id, c.target);
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i] as Frame);
  }
  return {
    scenario: scenario.name,
    depth: scenario.depth,
    schedules,
    states: seen.size,
    transitions,
    violations,
    firstViolation,
    complete,
  };
}

/**
 * Two steps commute when they touch different nodes: delivering to node x only changes x and
 * adds messages. A drop commutes with everything but delivering or dropping the same message.
 */
function commutes(targetA: string, targetB: string, idA: string, idB: string): boolean {
  if (targetA === "*" || targetB === "*") return false;
  if (idA.slice(1) === idB.slice(1)) return false;
  if (targetA.startsWith("msg:") || targetB.startsWith("msg:")) return true;
  return targetA !== targetB;
}

/**
 * The core scenarios send every accept to every follower at once: their schedules then include
 * every order of delivery a deferred accept could take (a deferral only delays a message, and
 * the commit index it carries is one the leader's next heartbeat would carry anyway).
 * `deferredAccepts` explores the deferral with the production setting.
 */
const everyAcceptAtOnce = { acceptSpareFollowers: limits.membersMax } as const;

/**
 * A leader waits for its slot in flight before it proposes a single write (docs/PROTOCOL.md
 * section 5); only full batches, recovered values and noops share the pipeline. The scenarios
 * that pipeline writes propose them at once instead, so that a few single writes put several
 * slots in flight: the pipeline works the same whatever its slots hold, and waiting only delays
 * a proposal.
 */
const pipelined = { pipelineSingleRequests: true } as const;

/** (a) A 3-node cell where two nodes receive requests at once and campaign against each other. */
export const duellingProposers: ExploreScenario = {
  name: "duelling-proposers",
  description: "3-node cell; nodes a and b both receive a write and campaign at the same time",
  depth: 10,
  timeoutsMax: 1,
  lossesMax: 0,
  setup(bugs) {
    const cluster = new PaxosCluster("explore-a", ["a", "b", "c"], {
      seed: 7,
      bugs: bugs ?? {},
      ...everyAcceptAtOnce,
    });
    cluster.propose("a", "A", 1);
    cluster.propose("b", "B", 2);
    return cluster;
  },
};

/**
 * (b) A 3-node cell whose leader has a membership change (replace c by d) in flight, pipelined
 * with a write, while b, told the leader is unresponsive, campaigns with a write of its own.
 */
export const membershipInFlight: ExploreScenario = {
  name: "membership-in-flight",
  description: "3-node cell; leader a replaces c by d with a write pipelined behind it; b campaigns",
  depth: 9,
  timeoutsMax: 0,
  lossesMax: 0,
  setup(bugs) {
    const cluster = new PaxosCluster("explore-b", ["a", "b", "c"], {
      seed: 11,
      bugs: bugs ?? {},
      ...everyAcceptAtOnce,
      ...pipelined,
    });
    cluster.propose("a", "X", 1);
    cluster.settle();
    cluster.addJoiningNode({ serverId: "d", incarnation: 4 });
    cluster.proposeChange("a", { add: "d", remove: { serverId: "c", incarnation: 3 } }, 2);
    cluster.propose("a", "Y", 3);
    cluster.propose("b", "Z", 4, true);
    return cluster;
  },
};

/**
 * (b') The moment a membership change activates: leader a replaced c by d at slot 2 and has a
 * write Y pipelined at slot 3 that a and c accepted; b has learned that slot 2 is committed;
 * every other message of that prefix is lost. Then b, told a is unresponsive, campaigns with a
 * write of its own, and every schedule of what follows is explored.
 */
export const membershipActivation: ExploreScenario = {
  name: "membership-activation",
  description:
    "3-node cell; the change replacing c by d commits with a write pipelined behind it; b campaigns",
  depth: 12,
  timeoutsMax: 0,
  lossesMax: 0,
  setup(bugs) {
    const cluster = new PaxosCluster("explore-b2", ["a", "b", "c"], {
      seed: 13,
      bugs: bugs ?? {},
      ...everyAcceptAtOnce,
      ...pipelined,
    });
    cluster.propose("a", "X", 1);
    cluster.settle();
    cluster.addJoiningNode({ serverId: "d", incarnation: 4 });
    cluster.proposeChange("a", { add: "d", remove: { serverId: "c", incarnation: 3 } }, 2);
    cluster.propose("a", "Y", 3);
    const slot = (n: number) => (m: PaxosMessage<string>) =>
      (m.type !== "accept" && m.type !== "accepted") || m.slot === n;
    cluster.deliverWhere("accept", "a", "b", slot(2));
    cluster.deliverWhere("accepted", "b", "a", slot(2)); // slot 2 committed at a
    cluster.deliverWhere("accept", "a", "c", slot(2));
    cluster.deliverWhere("accept", "a", "c", slot(3));
    cluster.deliverWhere("accepted", "c", "a", slot(3)); // Y accepted by a and c
    // b learns that slot 2 is committed, from whatever a sent it next: the no-op padding the
    // change, or (if nothing else went out) the commit notice a little later.
    cluster.advance(limits.commitNoticeDelayMs);
    cluster.deliverWhere(
      "any",
      "a",
      "b",
      (m) =>
        (m.type === "heartbeat" && m.commit >= 2) || (m.type === "accept" && m.slot !== 3 && m.commit >= 2),
    );
    cluster.network = [];
    cluster.propose("b", "Z", 4, true);
    return cluster;
  },
};

/**
 * (c) Deferred accepts, as a colony runs: a 3-node cell whose leader a sends each accept at once
 * only to b and holds c's; a pipelines two writes while c, told a is unresponsive, campaigns with
 * a write of its own. One timeout lets every held accept, commit notice and retransmission go.
 */
export const deferredAccepts: ExploreScenario = {
  name: "deferred-accepts",
  description: "3-node cell; leader a defers c's accepts of two pipelined writes; c campaigns",
  depth: 8,
  timeoutsMax: 1,
  lossesMax: 0,
  setup: (bugs) =>
    twoWritesAndARival(
      new PaxosCluster("explore-c", ["a", "b", "c"], { seed: 17, bugs: bugs ?? {}, ...pipelined }),
    ),
};

/** Leader a commits X, then gets writes Y and Z; c, told a is unresponsive, campaigns with W. */
function twoWritesAndARival(cluster: PaxosCluster): PaxosCluster {
  cluster.propose("a", "X", 1);
  cluster.settle();
  cluster.propose("a", "Y", 2);
  cluster.propose("a", "Z", 3);
  cluster.propose("c", "W", 4, true);
  return cluster;
}

/**
 * (d) A commit notice told by a held accept: leader a committed Y with b while c's accept of Y is
 * held; c, told a is unresponsive, campaigns with a write of its own. The timeout lets a's commit
 * notice go, which sends c the held accept carrying the commit index instead of a heartbeat.
 */
export const deferredCommitNotice: ExploreScenario = {
  name: "deferred-commit-notice",
  description: "3-node cell; a commits Y with b while c's accept is held; c campaigns; a's commit notice",
  depth: 11,
  timeoutsMax: 1,
  lossesMax: 0,
  setup(bugs) {
    const cluster = new PaxosCluster("explore-d", ["a", "b", "c"], {
      seed: 19,
      bugs: bugs ?? {},
      ...pipelined,
    });
    cluster.propose("a", "X", 1);
    cluster.settle();
    cluster.propose("a", "Y", 2);
    cluster.deliverWhere("accept", "a", "b");
    cluster.deliverWhere("accepted", "b", "a"); // Y is chosen; c's accept is still held
    cluster.propose("c", "W", 3, true);
    return cluster;
  },
};

/**
 * (e) Requests held for the slot in flight, with the production policy: leader a has Y in flight
 * and holds Z behind it, while c, told a is unresponsive, campaigns with a write of its own. Z
 * goes out only once Y commits, or is dropped if a loses its leadership.
 */
export const heldRequests: ExploreScenario = {
  name: "held-requests",
  description: "3-node cell; leader a holds Z behind Y in flight; c campaigns",
  depth: 10,
  timeoutsMax: 1,
  lossesMax: 0,
  setup: (bugs) =>
    twoWritesAndARival(
      new PaxosCluster("explore-e", ["a", "b", "c"], { seed: 23, bugs: bugs ?? {}, ...everyAcceptAtOnce }),
    ),
};

export const scenarios: readonly ExploreScenario[] = [
  duellingProposers,
  membershipInFlight,
  membershipActivation,
  deferredAccepts,
  deferredCommitNotice,
  heldRequests,
];
