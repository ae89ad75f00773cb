/** SQL text Lancet builds for LanceDB filters. */

/** A string literal: `'it''s'`. */
export function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** Ids per `IN` list: LanceDB parses every filter, so long lists go in pieces. */
const IN_BATCH = 10_000;

/** `column IN (...)` filters covering `ids`, at most {@link IN_BATCH} ids each. */
export function inFilters(column: string, ids: readonly (number | bigint)[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < ids.length; i += IN_BATCH) out.push(`${column} IN (${ids.slice(i, i + IN_BATCH).join(", ")})`);
  return out;
}
