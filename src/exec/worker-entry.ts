/**
 * The worker process entry, shared by every executor. Handshake: the parent sends `init`; the worker
 * loads the bound UDF bundle, runs `setup()` and answers `ready` (or `initFailed`, after which the
 * parent never reuses it). Then it runs one task at a time. It exits when its parent goes away.
 */
import { serializeError } from "../errors.ts";
import type { FromWorker, ToWorker } from "./protocol.ts";
import { TaskRunner } from "./apply.ts";

function send(m: FromWorker): void {
  process.send?.(m);
}

let runner: TaskRunner | undefined;
const stopped = new Set<number>();

process.on("disconnect", () => process.exit(0));
process.on("message", (raw) => {
  const m = raw as ToWorker;
  switch (m.type) {
    case "init":
      TaskRunner.create(m.config).then(
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
