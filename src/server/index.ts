export { FailureDetector } from "./failure-detector.ts";
export { IdleCollector, type IdleCollectorOptions } from "./idle-collector.ts";
export { missingServerNodeFlags, serverNodeFlags } from "./runtime.ts";
export {
  type PaxosSendKind,
  paxosSendKind,
  paxosSendKinds,
  Server,
  type ServerCounters,
  type ServerMessage,
  type ServerOptions,
  type ServerStatus,
  timerLatenessBucketsMs,
} from "./server.ts";
export { TimerWheel, type WheelItem } from "./timer-wheel.ts";
export {
  decodeServerMessage,
  encodeServerMessage,
  readServerMessage,
  serverMessageCodec,
  writeServerMessage,
} from "./wire.ts";
