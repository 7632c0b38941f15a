/**
 * The checkpoint worker's side (checkpoint-runner.ts): a module started as a worker thread calls
 * serveCheckpoints() with the storage's command codec, and from then on applies each job it is
 * sent to lmdb, one at a time, in the order they came.
 */
import { isMainThread, workerData } from "node:worker_threads";
import { assert } from "../core/index.ts";
import type { CommandCodec } from "../paxos/index.ts";
import { runJob, type WorkerReply, type WorkerRequest, type WorkerStart } from "./checkpoint-runner.ts";
import { LmdbApplier, openEnvironment } from "./lmdb.ts";

export function serveCheckpoints<C>(codec: CommandCodec<C>): void {
  assert(!isMainThread, "serveCheckpoints runs in a worker thread");
  const { path, port, signal } = workerData as WorkerStart;
  const env = openEnvironment(path);
  const applier = new LmdbApplier(env, codec);
  const reply = (message: WorkerReply): void => {
    port.postMessage(message);
    Atomics.add(signal, 0, 1);
    Atomics.notify(signal, 0);
  };
  port.on("message", (request: WorkerRequest) => {
    if (request.type === "close") {
      void env.root.close().finally(() => reply({ type: "closed" }));
      return;
    }
    reply({ type: "result", id: request.id, result: runJob((job) => applier.applyJob(job), request) });
  });
}
