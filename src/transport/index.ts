export { AddressBook, MappedTransport, onServerLost } from "./address-book.ts";
export {
  colonyKeyBytesMin,
  colonyKeyProblem,
  colonyKeysMax,
  colonyKeysProblem,
  decodeFrame,
  encodeFrame,
  encodeFrameBody,
  encodeHello,
  type Frame,
  type FrameBody,
  type FrameDecodeResult,
  type FrameKey,
  type FrameRejection,
  FrameSplitter,
  frameKey,
  frameVersion,
  type Link,
  linkKey,
  type SplitResult,
} from "./frame.ts";
export { type TransportLimits, transportLimits, transportLimitsProblem } from "./limits.ts";
export type { TransportPort } from "./port.ts";
export {
  type DropReason,
  dropReasons,
  formatServerAddress,
  isClientAddress,
  type KeyKind,
  listenAdvice,
  type MessageCodec,
  parseServerAddress,
  TcpTransport,
  type TcpTransportOptions,
  type TransportStats,
  type TransportWarn,
} from "./tcp.ts";
