/**
 * The worker process entry, shared by every executor. Handshake: the parent sends `init`; the worker
 * loads the bound UDF bundle, runs `setup()` and answers `ready` (or `initFailed`, after which the
 * parent never reuses it). Then it runs one task at a time. It exits when its parent goes away.
 *
 * Defence in depth: whoever starts it (an embedded pool, a `lancet worker` running a task from Redis)
 * has checked the bundle already; it checks again that the bundle is a content-addressed bundle of the
 * table's own Lancet store, and the one the column's binding names (at the job's pinned version),
 * before importing it, and fails its handshake otherwise.
 */
import { serializeError } from "../errors.ts";
import type { FromWorker, ToWorker } from "./protocol.ts";
import { TaskRunner } from "./apply.ts";
import { ChunkRunner } from "./chunk.ts";
import { UdtfRunner } from "./udtf.ts";
import { verifyStoredBundle } from "../udf/bundle.ts";
import { assertBundleBound } from "../udf/binding.ts";
import { registerStorageFromEnv } from "../storage/location.ts";

function send(m: FromWorker): void {
  process.send?.(m);
}

let runner: TaskRunner | ChunkRunner | UdtfRunner | undefined;
const stopped = new Set<number>();

process.on("disconnect", () => process.exit(0));
process.on("message", (raw) => {
  const m = raw as ToWorker;
  switch (m.type) {
    case "init":
      // A parked process is initialised again for its next job: the previous runner goes.
      runner?.shutdown();
      runner = undefined;
      Promise.resolve()
        .then(async () => {
          const c = m.config;
          const subject = `the worker process for column ${c.column} (table ${c.table})`;
          registerStorageFromEnv(c.dbDir);
          verifyStoredBundle(c, { subject, context: { table: c.table, column: c.column } });
          await assertBundleBound(c, subject);
          return c.chunker ? ChunkRunner.create(c) : c.udtf ? UdtfRunner.create(c) : TaskRunner.create(c);
        })
        .then(
          (r) => {
            runner = r;
            send({ type: "ready" });
          },
          (e: unknown) => send({ type: "initFailed", error: serializeError(e) }),
        );
      break;
    case "task": {
      const r = runner;
      if (!r) {
        send({ type: "taskFailed", id: m.id, error: { name: "Error", message: "worker received a task before init" } });
        break;
      }
      const id = m.id;
      r.run(m.task, (report) => send({ type: "batch", id, report }), () => stopped.has(id))
        .then(
          () => send({ type: "taskDone", id }),
          (e: unknown) => send({ type: "taskFailed", id, error: serializeError(e) }),
        )
        .finally(() => stopped.delete(id));
      break;
    }
    case "stop":
      stopped.add(m.id);
      break;
    case "shutdown":
      runner?.shutdown();
      process.disconnect?.();
      setTimeout(() => process.exit(0), 10).unref();
      break;
  }
});
