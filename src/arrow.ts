/**
 * The single Arrow and LanceDB module instances Lancet uses.
 *
 * `@lancedb/lancedb` is CommonJS and `require`s apache-arrow's CommonJS build; an ESM import of
 * `apache-arrow` would load a second copy whose classes LanceDB's `instanceof` checks reject. Every
 * Arrow object Lancet builds comes from this module so LanceDB accepts it.
 */
import { createRequire } from "node:module";
import type * as ArrowNs from "apache-arrow";
import type * as LanceNs from "@lancedb/lancedb";

const require = createRequire(import.meta.url);

// LanceDB's DataFusion memory pool defaults to 100 MiB, which a per-fragment indexed mergeInsert of
// ~250k+ rows exceeds ("Resources exhausted"). It is a cap, not an allocation; set it before the
// native module first runs a query unless the user chose a size.
process.env.LANCE_MEM_POOL_SIZE ??= String(4 * 1024 ** 3);

export const arrow: typeof ArrowNs = require("apache-arrow");
export const lancedb: typeof LanceNs = require("@lancedb/lancedb");

export type { ArrowNs, LanceNs };
