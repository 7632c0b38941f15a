export { MemoryStorage } from "./memory.ts";
export type { ForwardingPointer, LoadResult, StorageBatch, StoragePort } from "./port.ts";
