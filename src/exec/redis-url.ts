/**
 * Redis URLs in messages. Outside `exec/bullmq` so that code which only names a queue's Redis (the
 * options, the coordinator) does not load the distributed executor.
 */

/**
 * A Redis URL fit to print: its password replaced by `***` (`redis://user:***@host:6379`). Use it for
 * every message, log line, event and record that names the URL; never print the URL itself.
 */
export function redactRedisUrl(url: string): string {
  if (typeof url !== "string") return String(url);
  try {
    const u = new URL(url);
    if (u.password) {
      u.password = "***";
      return u.toString().replace(/\/$/, url.endsWith("/") ? "/" : "");
    }
    return url;
  } catch {
    // Not a URL: mask whatever sits between "//…:" and "@" as a password would.
    return url.replace(/(\/\/[^/@:]*:)[^@/]*@/, "$1***@");
  }
}
