export { serveCheckpoints } from "./checkpoint-worker.ts";
export {
  claimDataDirectory,
  DataDirectoryIdentityError,
  identityFileName,
  readDataIdentity,
  refuseOthersDirectory,
} from "./data-identity.ts";
export { DataDirectoryInUseError, type DataDirectoryLock, lockDataDirectory } from "./data-lock.ts";
export { diskLowWarning, diskSpaceNote, freeBytes } from "./disk-space.ts";
export {
  CorruptRecordError,
  checkpointBucketsMs,
  EnvironmentDamagedError,
  LmdbStorage,
  type LmdbStorageOptions,
  type LmdbStorageStats,
  type StoredRecordRef,
} from "./lmdb.ts";
export { makeDirectory } from "./make-directory.ts";
export { MemoryStorage } from "./memory.ts";
export type { ForwardingPointer, LoadResult, StorageBatch, StoragePort } from "./port.ts";
