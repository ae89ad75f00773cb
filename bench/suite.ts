/**
 * The benchmark suite: P1 (trivial UDF vs native SQL, graft and merge committers), Scaling (graft,
 * 1M–20M rows, time exponent), P2 (CPU-bound UDF, concurrency 2 vs 1), P3 (async UDF against a local
 * HTTP server), P4 (expanding UDF vs the disk's sequential write speed), P5 (peak RSS for 1 KB
 * outputs), P6 (rows recomputed after a kill -9 at 50 %), P8 (planning time for 10,000 fragments).
 *
 *   node bench/suite.ts                    # everything, full size (~15 min on a 2-core VM)
 *   node bench/suite.ts --only P1,P3       # some benchmarks (names: P1 SCALING P2 P3 P4 P5 P6 P8)
 *   node bench/suite.ts --quick            # smoke run: small sizes, one repetition
 *   node bench/suite.ts --only P5 --p5-rows 2500000,5000000
 *   node bench/suite.ts --only P2 --p2-rows 800000
 *
 * Every benchmark prints a Markdown section and, last, a one-line JSON result (`{"bench":"P1",…}`) to
 * stdout; progress notes go to stderr. Everything runs in one `fs.mkdtempSync` directory under
 * `os.tmpdir()`, removed at the end. Side-by-side comparisons run on fresh copies of the same base
 * table within one repetition, in an order that rotates between repetitions.
 *
 * Each benchmark is a module of its own under bench/suite/ (p1.ts, scaling.ts, p2.ts … p8.ts); what
 * they share (options, the working directory and base tables, timing, medians, /proc sampling,
 * running a backfill or the CLI, printing) is in bench/suite/harness.ts. This file parses the options
 * and runs the selected benchmarks in order.
 */
import { performance } from "node:perf_hooks";
import { ALL, CORES, parseSuiteOptions, say, Suite, type BenchName } from "./suite/harness.ts";
import { benchP1 } from "./suite/p1.ts";
import { benchP2 } from "./suite/p2.ts";
import { benchP3 } from "./suite/p3.ts";
import { benchP4 } from "./suite/p4.ts";
import { benchP5 } from "./suite/p5.ts";
import { benchP6 } from "./suite/p6.ts";
import { benchP8 } from "./suite/p8.ts";
import { benchScaling } from "./suite/scaling.ts";

const suite = new Suite(parseSuiteOptions());
const facts = suite.machineFacts();
say(`# Lancet benchmark suite${suite.quick ? " (--quick)" : ""}`);
say();
say(`- Date: ${String(facts.date)}; ${CORES} cores (${String(facts.cpuModel)}), ${String(facts.memGiB)} GiB RAM; Node ${process.version}; @lancedb/lancedb ${String(facts.lancedb)}, apache-arrow ${String(facts.apacheArrow)}`);
say(`- Working directory: ${suite.root} (\`df\`: ${String(facts.df)})`);
say(`- Benchmarks: ${[...suite.only].join(", ")}`);
say();
const timings: Record<string, number> = {};
const runners: Record<BenchName, (suite: Suite) => Promise<void>> = { P1: benchP1, SCALING: benchScaling, P2: benchP2, P3: benchP3, P4: benchP4, P5: benchP5, P6: benchP6, P8: benchP8 };
try {
  for (const name of ALL) {
    if (!suite.only.has(name)) continue;
    const t0 = performance.now();
    suite.note(`${name}: start`);
    await runners[name](suite);
    timings[name] = Math.round((performance.now() - t0) / 1000);
    suite.note(`${name}: done in ${timings[name]} s`);
  }
} finally {
  suite.close();
}
const totalS = Math.round((performance.now() - suite.start) / 1000);
say(`Suite wall time: ${totalS} s (${Object.entries(timings).map(([k, v]) => `${k} ${v} s`).join(", ")}).`);
say();
say(JSON.stringify({ bench: "suite", ...facts, wallS: totalS, perBenchS: timings }));
