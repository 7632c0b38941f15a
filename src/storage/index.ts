export type { ForwardingPointer, LoadResult, StorageBatch, StoragePort } from "./port.ts";
export { MemoryStorage } from "./memory.ts";
