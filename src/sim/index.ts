export { type ExploreReport, type ExploreScenario, explore, scenarios } from "./explorer.ts";
export {
  type FaultMix,
  faultMixes,
  formatReport,
  reproduceCommand,
  runSimulation,
  type SimOptions,
  type SimReport,
} from "./run.ts";
export { Scenario } from "./scenario.ts";
export { type HistoryEntry, SimWorld } from "./world.ts";
