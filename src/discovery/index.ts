export { placeCell, type ServerPlace, TopologyDiscovery } from "./topology.ts";
