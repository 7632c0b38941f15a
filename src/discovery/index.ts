export { placeCell, rendezvousScore, type ServerPlace, TopologyDiscovery } from "./topology.ts";
