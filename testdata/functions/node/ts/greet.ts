export type Greeting = { hello: string; to: string };

export function greeting(name: string): Greeting {
  return { hello: `Hello, ${name}!`, to: name };
}
