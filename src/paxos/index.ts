export {
  BALLOT_CHOSEN,
  BALLOT_NONE,
  type Ballot,
  ballotIncarnation,
  ballotRound,
  formatBallot,
  makeBallot,
} from "./ballot.ts";
export {
  type CommandCodec,
  decodeNodeHeader,
  decodePaxosMessage,
  decodeStoredEntry,
  encodeNodeHeader,
  encodePaxosMessage,
  encodeStoredEntry,
  type NodeHeader,
  PAXOS_RECORD_VERSION,
  PAXOS_WIRE_VERSION,
  persistedNode,
  readChange,
  readNodeId,
  readPaxosMessage,
  writeChange,
  writeNodeId,
  writePaxosMessage,
} from "./codec.ts";
export {
  applyMembershipChange,
  configurationFor,
  initialMembership,
  latestConfiguration,
  majority,
  membershipChangeProblem,
} from "./membership.ts";
export {
  type DroppedRequest,
  type DropReason,
  type NodeWrite,
  Output,
  type ProposalOutcome,
  type ProposalResult,
  type ReplicaEvent,
} from "./output.ts";
export {
  type PersistedNode,
  type PlantedBugs,
  Replica,
  type ReplicaEnvironment,
  type ReplicaObserver,
  type ReplicaOptions,
  type ReplicaStatus,
  type RequestOutcome,
} from "./replica.ts";
export type { ApplyContext, StateMachine } from "./state-machine.ts";
export type {
  Configuration,
  LogEntry,
  LogValue,
  MembershipChange,
  MembershipResult,
  MembershipState,
  PaxosMessage,
  PaxosMessageType,
  Snapshot,
} from "./types.ts";
