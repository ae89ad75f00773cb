/**
 * A worker's Prometheus metrics (prom-client) and the HTTP endpoint that serves them with the queue's
 * own BullMQ gauges, plus `/healthz` for Kubernetes probes.
 */
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Registry } from "prom-client";

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly tasks: Counter<"queue" | "status">;
  readonly rows: Counter<"queue">;
  readonly rowsSkipped: Counter<"queue">;
  readonly udfSeconds: Counter<"queue">;
  readonly failures: Counter<"queue" | "kind">;
  readonly active: Gauge<"queue">;
  readonly slots: Gauge<"queue">;

  constructor() {
    const registers = [this.registry];
    this.tasks = new Counter({ name: "lancet_worker_tasks_total", help: "Tasks finished by this worker, by outcome (completed, stopped, failed).", labelNames: ["queue", "status"], registers });
    this.rows = new Counter({ name: "lancet_worker_rows_total", help: "Rows computed and checkpointed.", labelNames: ["queue"], registers });
    this.rowsSkipped = new Counter({ name: "lancet_worker_rows_skipped_total", help: "Rows the error policy skipped (left null).", labelNames: ["queue"], registers });
    this.udfSeconds = new Counter({ name: "lancet_worker_udf_seconds_total", help: "Wall time spent in UDF calls.", labelNames: ["queue"], registers });
    this.failures = new Counter({ name: "lancet_worker_task_failures_total", help: "Failed tasks by kind (udf, crash, oom, hang, storage, resources, setup, refused: a task naming a bundle or environment it may not use).", labelNames: ["queue", "kind"], registers });
    this.active = new Gauge({ name: "lancet_worker_active_tasks", help: "Tasks running now.", labelNames: ["queue"], registers });
    this.slots = new Gauge({ name: "lancet_worker_slots", help: "Tasks this worker runs at once.", labelNames: ["queue"], registers });
  }

  /** Serves `/metrics` (these metrics + `extra()`, e.g. BullMQ's queue gauges) and `/healthz` ("ok", or "draining" after SIGTERM) on 0.0.0.0:`port`. */
  async serve(port: number, extra: () => Promise<string>, healthy: () => boolean): Promise<Server> {
    const server = createServer((req, res) => {
      const url = req.url ?? "/";
      if (url.startsWith("/healthz")) {
        const ok = healthy();
        // 200 while draining too: a liveness probe must not kill a worker finishing its tasks after SIGTERM.
        res.writeHead(200, { "content-type": "text/plain" }).end(ok ? "ok\n" : "draining\n");
        return;
      }
      if (!url.startsWith("/metrics")) {
        res.writeHead(404).end();
        return;
      }
      Promise.all([this.registry.metrics(), extra().catch(() => "")]).then(
        ([own, queue]) => res.writeHead(200, { "content-type": this.registry.contentType }).end(`${own}\n${queue}\n`),
        (e: unknown) => res.writeHead(500).end(String(e)),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, () => resolve());
    });
    return server;
  }
}
