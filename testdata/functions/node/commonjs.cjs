// A CommonJS handler: module.exports.handle, as many existing functions are written.
module.exports.handle = async (event) => ({ statusCode: 201, body: { cjs: true, got: event } });
