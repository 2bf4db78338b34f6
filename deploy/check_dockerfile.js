// Parses the Dockerfile with dockerfile-ast (npm) and checks what a build would trip over first:
// known instructions, global ARGs used in FROM declared, COPY --from naming an earlier stage,
// known HEALTHCHECK/RUN flags, and exec-form ENTRYPOINT/CMD/HEALTHCHECK being JSON arrays.
// Usage: NODE_PATH=<node_modules> node deploy/check_dockerfile.js Dockerfile
const fs = require("fs");
const { DockerfileParser } = require("dockerfile-ast");

const file = process.argv[2] || "Dockerfile";
const text = fs.readFileSync(file, "utf8");
const df = DockerfileParser.parse(text);
const known = new Set(["ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
  "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"]);
const flags = { HEALTHCHECK: ["interval", "timeout", "start-period", "start-interval", "retries"],
  RUN: ["mount", "network", "security"], COPY: ["from", "chown", "chmod", "link", "parents", "exclude"] };
const problems = [];
const globalArgs = new Set();
const stages = [];
let seenFrom = false;
for (const ins of df.getInstructions()) {
  const kw = ins.getKeyword();
  const line = ins.getRange().start.line + 1;
  if (!known.has(kw)) problems.push(`line ${line}: unknown instruction ${kw}`);
  if (kw === "ARG" && !seenFrom) globalArgs.add(ins.getArguments()[0].getValue().split("=")[0]);
  if (kw === "FROM") {
    seenFrom = true;
    for (const m of ins.getArgumentsContent().matchAll(/\$\{?(\w+)/g)) {
      if (!globalArgs.has(m[1])) problems.push(`line ${line}: FROM uses ARG ${m[1]} not declared before the first FROM`);
    }
    stages.push(ins.getBuildStage());
  }
  for (const f of ins.getFlags ? ins.getFlags() : []) {
    if (flags[kw] && !flags[kw].includes(f.getName())) problems.push(`line ${line}: unknown ${kw} flag --${f.getName()}`);
    if (kw === "COPY" && f.getName() === "from" && !stages.slice(0, -1).includes(f.getValue())) {
      problems.push(`line ${line}: COPY --from=${f.getValue()} names no earlier stage (${stages.join(", ")})`);
    }
  }
  if (["ENTRYPOINT", "CMD", "HEALTHCHECK"].includes(kw)) {
    const content = ins.getArgumentsContent() || "";
    const json = content.replace(/^(--\S+\s+|\\\s*)*/, "").replace(/^CMD\s+/, "");
    if (json.trim().startsWith("[")) {
      try { JSON.parse(json.replace(/\\\n/g, "")); } catch (e) { problems.push(`line ${line}: ${kw} exec form is not a JSON array: ${e.message}`); }
    }
  }
}
if (problems.length) {
  for (const p of problems) console.log(`FAIL  ${file}: ${p}`);
  process.exit(1);
}
console.log(`ok    ${file}: ${df.getInstructions().length} instructions, stages ${stages.join(", ")}; ` +
  "instructions, flags, global ARGs, COPY --from and exec forms check out");
