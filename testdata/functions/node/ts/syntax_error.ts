export async function handler(event: { name: string }) {
  return { statusCode: 200, body: event.name ;
}
