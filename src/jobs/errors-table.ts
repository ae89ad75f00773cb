/**
 * The errors table: every row an error policy skipped, in the LanceDB system table `_lancet_errors`
 * of the same database (append-only), so any process can list them (`lancet errors`).
 */
import * as path from "node:path";
import { existsSync } from "node:fs";
import { arrow } from "../arrow.ts";
import { openSystemTable } from "./store.ts";
import type { LanceNs } from "../arrow.ts";

export const ERRORS_TABLE = "_lancet_errors";

export interface ErrorRecord {
  readonly jobId: string;
  readonly table: string;
  readonly column: string;
  /** `module#export` of the UDF. */
  readonly udf: string;
  readonly udfVersion: string;
  readonly fragment: number;
  /** Row address (fragment << 32 | physical offset), decimal. */
  readonly rowAddress: string;
  /** Offset of the row among the fragment's live rows at the planned version. */
  readonly rowOffset: number;
  readonly name: string;
  readonly message: string;
  readonly stack: string;
  readonly attempt: number;
  readonly bisectDepth: number;
  /** ISO time. */
  readonly at: string;
}

const FIELDS: [keyof ErrorRecord, "utf8" | "int" | "float"][] = [
  ["jobId", "utf8"], ["table", "utf8"], ["column", "utf8"], ["udf", "utf8"], ["udfVersion", "utf8"], ["fragment", "int"],
  ["rowAddress", "utf8"], ["rowOffset", "float"], ["name", "utf8"], ["message", "utf8"], ["stack", "utf8"], ["attempt", "int"],
  ["bisectDepth", "int"], ["at", "utf8"],
];
const type = (k: "utf8" | "int" | "float"): ArrowType => (k === "utf8" ? new arrow.Utf8() : k === "int" ? new arrow.Int32() : new arrow.Float64());
type ArrowType = InstanceType<typeof arrow.Utf8> | InstanceType<typeof arrow.Int32> | InstanceType<typeof arrow.Float64>;
const SCHEMA = new arrow.Schema(FIELDS.map(([k, t]) => new arrow.Field(k, type(t), true)));

export class ErrorsTable {
  private readonly table: LanceNs.Table;
  private constructor(table: LanceNs.Table) {
    this.table = table;
  }

  static async open(dbDir: string): Promise<ErrorsTable> {
    return new ErrorsTable(await openSystemTable(dbDir, ERRORS_TABLE, SCHEMA));
  }

  async append(records: readonly ErrorRecord[]): Promise<void> {
    if (records.length === 0) return;
    const cols: Record<string, unknown> = {};
    for (const [k, t] of FIELDS) cols[k] = arrow.vectorFromArray(records.map((r) => r[k]), type(t) as never);
    await this.table.add(new arrow.Table(SCHEMA, cols as never) as never);
  }

  async list(filter: { jobId?: string; column?: string; table?: string } = {}): Promise<ErrorRecord[]> {
    const q = (s: string): string => `'${s.replace(/'/g, "''")}'`;
    const where = [
      filter.jobId ? `\`jobId\` = ${q(filter.jobId)}` : "",
      filter.column ? `\`column\` = ${q(filter.column)}` : "",
      filter.table ? `\`table\` = ${q(filter.table)}` : "",
    ].filter(Boolean);
    let query = this.table.query();
    if (where.length > 0) query = query.where(where.join(" AND "));
    const rows = (await query.toArray()) as Record<string, unknown>[];
    return rows
      .map((r) => Object.fromEntries(FIELDS.map(([k]) => [k, r[k]])) as unknown as ErrorRecord)
      .sort((a, b) => a.at.localeCompare(b.at) || a.fragment - b.fragment || a.rowOffset - b.rowOffset);
  }
}

/** Error records of a database (none when no job ever skipped a row). */
export async function listErrors(db: string, filter: { jobId?: string; column?: string; table?: string } = {}): Promise<ErrorRecord[]> {
  const dir = path.resolve(db);
  if (!existsSync(path.join(dir, `${ERRORS_TABLE}.lance`))) return [];
  return (await ErrorsTable.open(dir)).list(filter);
}
