/**
 * What every worker-side runner does first (a column's UDF, a chunker, a UDTF): load the bound
 * declaration from its bundle, run its `setup()` once for the process, connect to the database.
 */
import type { LanceNs } from "../arrow.ts";
import { UdfError, type ErrorContext } from "../errors.ts";
import type { WorkerConfig } from "./protocol.ts";
import { connectDb } from "../storage/location.ts";

/**
 * Loads `config`'s bundle with `load`, runs its `setup()`, connects to the database.
 * @throws UdfError UDF_SETUP_FAILED naming `what` (e.g. "UDF m.ts#f for column c") when setup throws
 */
export async function prepareRunner<S extends { readonly setup?: (() => unknown) | undefined }>(
  config: WorkerConfig,
  load: (file: string, exportName: string, label: string) => Promise<S>,
  what: string,
  context: ErrorContext,
): Promise<{ spec: S; state: unknown; db: LanceNs.Connection }> {
  const spec = await load(config.bundlePath, config.exportName, config.label);
  let state: unknown;
  if (spec.setup) {
    try {
      state = await spec.setup();
    } catch (e) {
      throw new UdfError("UDF_SETUP_FAILED", `setup() of ${what} failed: ${(e as Error)?.message ?? String(e)}`, { ...context, cause: e });
    }
  }
  return { spec, state, db: await connectDb(config.dbDir) };
}
