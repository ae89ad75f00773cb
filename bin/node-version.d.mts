/** The oldest supported Node.js, as `[major, minor]`. */
export declare const MIN_NODE: readonly [22, 18];
/**
 * Why `version` cannot run Lancet, as a message that says what to do; `undefined` when it can.
 * `installed`: Lancet is a dependency under node_modules (default: judged from the module's location);
 * `execPath`: the running node (default `process.execPath`).
 */
export declare function unsupportedNode(version: string, where?: { installed?: boolean; execPath?: string }): string | undefined;
/** Error code of the failure the module throws, when imported, on an unsupported Node. */
export declare const NODE_UNSUPPORTED: "NODE_UNSUPPORTED";
