// Lance's Rust logger reads LANCEDB_LOG once, when @lancedb/lancedb loads: import this module before
// anything that loads it, in a test whose expected operations make Lance warn (a DataReplacement
// "is not stable yet"), so a passing run prints no warnings. Errors still print. A value set outside
// (LANCEDB_LOG=debug npm test) wins.
process.env.LANCEDB_LOG ??= "error";
