// Sample function for the compose stack (node runtime, ES module): greets and echoes what it got.
export async function handler(event, context) {
  const name = (event && typeof event === "object" && event.name) || "World";
  console.log(`hello-node: ${context.type} from ${context.source}`);
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ message: `Hello, ${name}!`, type: context.type, source: context.source, data: event }),
  };
}
