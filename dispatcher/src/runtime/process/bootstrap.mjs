// Switchyard Node.js worker: loads one handler (ES module or CommonJS) and serves invocations over
// the worker protocol (docs/worker-protocol.md): 4-byte big-endian length + UTF-8 JSON frames on
// the original stdin/stdout. process.stdout is pointed at stderr before the handler loads, so
// console.log() goes to the invocation's logs and cannot corrupt the protocol.
import { writeSync } from "node:fs";
import { register } from "node:module";
import { pathToFileURL } from "node:url";

const PROTO_OUT = 1;
const END_MARK = "\x1eSWITCHYARD-END ";
const stderrWrite = process.stderr.write.bind(process.stderr);
process.stdout.write = (chunk, encoding, cb) => stderrWrite(chunk, encoding, cb);

function send(msg) {
  const body = Buffer.from(JSON.stringify(msg), "utf8");
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  const frame = Buffer.concat([head, body]);
  let off = 0;
  while (off < frame.length) {
    try {
      off += writeSync(PROTO_OUT, frame, off);
    } catch (e) {
      if (e.code !== "EAGAIN") throw e;
    }
  }
}

function errorOf(e, kind) {
  const err = e instanceof Error ? e : new Error(String(e));
  return {
    kind,
    type: err.name || "Error",
    message: err.message || String(e),
    traceback: err.stack || "",
    permanent: Boolean(e && e.permanent),
  };
}

function responseOf(result) {
  if (result && typeof result === "object" && "statusCode" in result) {
    const headers = {};
    for (const [k, v] of Object.entries(result.headers || {})) headers[String(k).toLowerCase()] = String(v);
    let body = result.body;
    if (body === undefined || body === null) return { status: Number(result.statusCode), headers, body: "" };
    if (Buffer.isBuffer(body) || body instanceof Uint8Array) {
      return { status: Number(result.statusCode), headers, body_base64: Buffer.from(body).toString("base64") };
    }
    if (typeof body !== "string") {
      headers["content-type"] ??= "application/json";
      body = JSON.stringify(body);
    }
    return { status: Number(result.statusCode), headers, body };
  }
  return { status: 200, headers: { "content-type": "application/json" }, body: JSON.stringify(result ?? null) };
}

async function load(path, entrypoint) {
  const mod = await import(pathToFileURL(path).href);
  const candidates = entrypoint ? [entrypoint] : ["handler", "handle"];
  for (const name of candidates) {
    if (typeof mod[name] === "function") return mod[name];
    if (mod.default && typeof mod.default[name] === "function") return mod.default[name];
  }
  if (!entrypoint && typeof mod.default === "function") return mod.default;
  throw new TypeError(`${path} exports no function ${candidates.join(" or ")}`);
}

function finish(seq, reply) {
  // Logs first (the end mark follows everything the handler wrote), then the result frame.
  stderrWrite(`${END_MARK}${seq}\n`, () => send(reply));
}

// Module loader hooks (run on Node's loader thread) that turn .ts/.mts files into JavaScript with
// the typescript package's transpileModule: types are removed, nothing is type-checked, syntax
// errors fail the load with their position.
const TS_HOOKS = `
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
let ts;
export function initialize(data) { ts = createRequire(data.base)(data.typescript); }
export async function load(url, context, nextLoad) {
  if (!url.startsWith("file:") || !/\\.m?ts$/.test(new URL(url).pathname)) return nextLoad(url, context);
  const loaded = await nextLoad(url, { ...context, format: "module" });
  const fileName = fileURLToPath(url);
  const out = ts.transpileModule(String(loaded.source), {
    fileName,
    reportDiagnostics: true,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, inlineSourceMap: true },
  });
  if (out.diagnostics && out.diagnostics.length) {
    const d = out.diagnostics[0];
    const at = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : null;
    const where = at ? fileName + ":" + (at.line + 1) + ":" + (at.character + 1) : fileName;
    throw new SyntaxError(where + ": " + ts.flattenDiagnosticMessageText(d.messageText, "\\n"));
  }
  return { format: "module", source: out.outputText, shortCircuit: true };
}
`;

async function main() {
  const [path, entrypoint, typescript] = process.argv.slice(-3);
  let handler;
  try {
    if (typescript !== "-") {
      const base = pathToFileURL(path).href;
      register("data:text/javascript," + encodeURIComponent(TS_HOOKS), { data: { typescript, base } });
    }
    handler = await load(path, entrypoint === "-" ? "" : entrypoint);
  } catch (e) {
    send({ type: "init_error", error: errorOf(e, "init") });
    process.exit(1);
  }
  send({ type: "ready", pid: process.pid });
  let buf = Buffer.alloc(0);
  let busy = Promise.resolve();
  process.stdin.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 4) {
      const len = buf.readUInt32BE(0);
      if (buf.length < 4 + len) break;
      const msg = JSON.parse(buf.subarray(4, 4 + len).toString("utf8"));
      buf = buf.subarray(4 + len);
      if (msg.type !== "invoke") continue;
      busy = busy.then(async () => {
        const context = { ...(msg.context || {}) };
        context.getRemainingTimeInMillis = () =>
          context.deadline_ms == null ? null : Math.max(0, context.deadline_ms - Date.now());
        try {
          const result = await handler(msg.event, context);
          finish(msg.seq, { type: "result", seq: msg.seq, ok: true, response: responseOf(result) });
        } catch (e) {
          finish(msg.seq, { type: "result", seq: msg.seq, ok: false, error: errorOf(e, "handler") });
        }
      });
    }
  });
  process.stdin.on("end", () => process.exit(0));
}

main();
