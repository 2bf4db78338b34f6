// ES module handlers for the node runtime tests.
export async function handler(event, context) {
  console.log("esm got", JSON.stringify(event));
  return { statusCode: 200, headers: { "content-type": "application/json" },
           body: JSON.stringify({ hello: event?.name ?? "World", type: context.type, fn: context.function_name }) };
}

export async function fail(event) {
  throw new Error("node says no: " + event?.x);
}

export async function slow(event) {
  await new Promise((r) => setTimeout(r, (event?.seconds ?? 5) * 1000));
  return "late";
}

export async function hog() {
  const chunks = [];
  for (;;) chunks.push(new Array(1 << 20).fill(Math.random()));
}

export async function env() {
  return { secret: process.env.SWITCHYARD_TEST_SECRET ?? null, declared: process.env.GREETING ?? null, pid: process.pid };
}

export async function crash() {
  process.exit(3);
}
