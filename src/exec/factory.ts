/**
 * Chooses and builds a job's {@link Executor} from its `executor` option: the embedded child-process
 * pool (`"local"`), or the BullMQ queue (`{ redis, ... }`). The coordinator goes through here and never
 * imports `exec/bullmq`: the queue code (and BullMQ, ioredis) is loaded with `import()` only when a job
 * asks for distributed mode.
 */
import type { ErrorContext } from "../errors.ts";
import type { QueueExecutorSpec } from "../options.ts";
import type { QueueEventType, Resources } from "./bullmq/queue.ts";
import { LocalPool } from "./pool.ts";
import type { Executor, WorkerConfig } from "./protocol.ts";

export type { QueueEventType, Resources };

/** Where a job's tasks run: `"local"` or a queue on Redis (the resolved `executor` option). */
export type ExecutorChoice = "local" | Readonly<QueueExecutorSpec>;

export interface ExecutorRequest {
  readonly choice: ExecutorChoice;
  /** The worker processes' configuration (what they load and where they checkpoint). */
  readonly config: WorkerConfig;
  /** Local pool: how many processes. */
  readonly size: number;
  readonly env: Readonly<Record<string, string>>;
  readonly taskTimeoutMs: number;
  readonly memoryMb?: number | undefined;
  /** Queue: the Lancet job id (cancel scope). */
  readonly jobId: string;
  /** Queue: the UDF's resource class and needs. */
  readonly needs: Resources;
  /** Queue: a dead coordinator's job on this column, whose queued tasks are told to stop. */
  readonly supersedes?: string | undefined;
  /** Queue: notable things (a task re-enqueued, no worker yet), for the job's events. */
  readonly onEvent?: (kind: QueueEventType, message: string) => void;
}

export interface CreatedExecutor {
  readonly executor: Executor;
  /** The queue the tasks go to, in distributed mode. */
  readonly queueName?: string;
}

/** Builds the executor `req.choice` names. */
export async function createExecutor(req: ExecutorRequest): Promise<CreatedExecutor> {
  const memory = req.memoryMb !== undefined ? { memoryMb: req.memoryMb } : {};
  if (req.choice === "local") {
    return { executor: await LocalPool.create({ size: req.size, config: req.config, env: req.env, taskTimeoutMs: req.taskTimeoutMs, ...memory }) };
  }
  const { QueueExecutor } = await import("./bullmq/executor.ts");
  const q = await QueueExecutor.create({
    ...req.choice,
    jobId: req.jobId,
    config: req.config,
    pool: { taskTimeoutMs: req.taskTimeoutMs, env: req.env, ...memory },
    needs: req.needs,
    ...(req.supersedes ? { supersedes: req.supersedes } : {}),
    ...(req.onEvent ? { onEvent: req.onEvent } : {}),
  });
  return { executor: q, queueName: q.queueName };
}

/** Distributed mode: total task slots of the live workers that can run `needs` (QUEUE_UNAVAILABLE when Redis does not answer). */
export async function queueSlots(choice: Readonly<QueueExecutorSpec>, needs: Resources, where: ErrorContext): Promise<number> {
  const { liveSlots } = await import("./bullmq/executor.ts");
  return liveSlots(choice.redis, choice.queue, needs, where);
}

/** Distributed mode: stops a dead coordinator's tasks still on the queue, waiting for running ones to checkpoint. */
export async function stopQueuedTasks(choice: Readonly<QueueExecutorSpec>, needs: Resources, jobId: string, where: ErrorContext): Promise<void> {
  const { stopQueuedJob } = await import("./bullmq/executor.ts");
  await stopQueuedJob(choice.redis, choice.queue, needs, jobId, where);
}
