// serverless-offline-sns declares the serverless framework as a dependency; its SNS server never
// uses it. This stub stands in for it (the real one is 266 MB).
module.exports = {};
