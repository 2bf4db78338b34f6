// Exports no handler: deploying it must fail with a clear message.
export const notAFunction = 42;
