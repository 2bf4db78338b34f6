// A TypeScript handler for the node runtime: types are stripped (Node 22.6+) or transpiled with the
// `typescript` package (older Node); nothing here is type-checked at run time.
import { greeting, type Greeting } from "./greet.ts";

interface Event {
  name?: string;
}

interface Context {
  function_name: string;
  type: string;
}

export async function handler(event: Event, context: Context): Promise<{ statusCode: number; body: string }> {
  const g: Greeting = greeting(event?.name ?? "World");
  console.log(`typed handler greets ${g.to}`);
  return { statusCode: 200, body: JSON.stringify({ ...g, fn: context.function_name }) };
}

export async function fail(): Promise<never> {
  throw new Error("typed failure");
}
