/**
 * The module a server's storage starts its checkpoint worker from (LmdbStorageOptions
 * .checkpointWorker): checkpoints of cell commands, off the server's event loop.
 */
import { commandCodec } from "../cell/index.ts";
import { serveCheckpoints } from "../storage/index.ts";

serveCheckpoints(commandCodec);
