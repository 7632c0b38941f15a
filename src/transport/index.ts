export type { TransportPort } from "./port.ts";
