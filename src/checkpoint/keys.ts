/**
 * Checkpoint keys. A computed batch is only reused when everything that determined its values is
 * the same: the UDF version, the column, the row selection (`where`, or the implicit one), the table,
 * the fragment's input data files and its deletions (offsets count live rows), and the row range.
 */
import { createHash } from "node:crypto";
import type { FragmentInfo } from "../read/manifest.ts";

function h(...parts: (string | number)[]): string {
  return createHash("sha256").update(parts.join("\u0000")).digest("hex");
}

/** Identity of a fragment's input data: the data files holding the UDF's input fields. */
export function inputIdentity(fragment: FragmentInfo, inputFieldIds: readonly number[]): string {
  const ids = new Set(inputFieldIds);
  const files = fragment.files.filter((f) => f.fields.some((id) => ids.has(id))).map((f) => f.path).sort();
  return h("inputs", fragment.physicalRows, ...files).slice(0, 32);
}

/** Identity of a fragment's deletions (live-row offsets shift when rows are deleted). */
export function deletionIdentity(fragment: FragmentInfo): string {
  return fragment.deletion ? `${fragment.deletion.readVersion}.${fragment.deletion.id}.${fragment.deletion.numDeletedRows}` : "none";
}

export interface BatchKeyParts {
  readonly table: string;
  readonly column: string;
  readonly udfVersion: string;
  /** The row selection: the user's `where`, `"<col> IS NULL"`, or `""` for every row. */
  readonly selection: string;
  readonly fragmentId: number;
  readonly inputIdentity: string;
  readonly deletionIdentity: string;
}

/** Key under which a fragment's computed batches are stored (ranges are appended per batch). */
export function batchKey(p: BatchKeyParts): string {
  const digest = h("batch", p.table, p.column, p.udfVersion, p.selection, p.inputIdentity, p.deletionIdentity).slice(0, 32);
  return `${p.column}/${p.fragmentId}-${digest}`;
}

/** The fragment id of a key made by {@link batchKey}, or undefined for anything else. */
export function batchKeyFragment(key: string): number | undefined {
  const m = /\/(\d+)-[0-9a-f]+$/.exec(key);
  return m ? Number(m[1]) : undefined;
}

/** Namespace of a column's completion markers: one for plain runs, one per explicit `where`. */
export function markerNamespace(column: string, where: string | undefined): string {
  return where === undefined ? `${column}/done` : `${column}/where-${h("where", where).slice(0, 16)}`;
}

/** A fragment's completion marker: its values are complete for this UDF version and input data. */
export interface DoneMarker {
  readonly fragmentId: number;
  readonly udfVersion: string;
  readonly inputIdentity: string;
  readonly rowsWritten: number;
  /** Rows left null by the error policy: a later run retries the fragment's null rows. */
  readonly rowsSkipped?: number;
  readonly committedVersion: number;
  readonly at: string;
}

export function markerName(fragmentId: number, udfVersion: string, identity: string, table: string): string {
  return `${fragmentId}-${h("done", table, udfVersion, identity).slice(0, 24)}`;
}
