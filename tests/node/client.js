// Calls a running `lmrec serve` from Node.js with nothing but the .proto files: the contract works
// without any Python. Usage: node client.js HOST:PORT   (prints a JSON summary, exits 1 on failure)
'use strict';

const path = require('path');
const assert = require('assert');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');
const HEALTH_PROTO = require.resolve('grpc-health-check/proto/health/v1/health.proto');
const OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function load(file, includeDirs) {
  return grpc.loadPackageDefinition(protoLoader.loadSync(file, { ...OPTIONS, includeDirs }));
}

const lmrec = load('lmrec/v1/recommender.proto', [PROTOS]).lmrec.v1;
const health = load(HEALTH_PROTO, [path.dirname(HEALTH_PROTO)]).grpc.health.v1;

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 10000);
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

async function main() {
  const address = process.argv[2];
  assert(address, 'usage: node client.js HOST:PORT');
  const credentials = grpc.credentials.createInsecure();
  const healthClient = new health.Health(address, credentials);
  const rec = new lmrec.Recommender(address, credentials);

  const overall = await call(healthClient, 'Check', { service: '' });
  const service = await call(healthClient, 'Check', { service: 'lmrec.v1.Recommender' });
  assert.strictEqual(overall.status, 'SERVING');
  assert.strictEqual(service.status, 'SERVING');

  const info = await call(rec, 'GetModelInfo', {});
  const embedded = await call(rec, 'Embed', { texts: ['stapler paper ink', 'guitar drum'] });
  assert.strictEqual(embedded.vectors.length, 2);
  assert.strictEqual(embedded.dim, info.dim);
  const norms = embedded.vectors.map((v) => Math.hypot(...v.values));
  norms.forEach((n) => assert(Math.abs(n - 1) < 1e-4, `vector norm ${n}`));

  const upserted = await call(rec, 'UpsertItems', {
    items: [
      { id: 'node-1', text: 'guitar amp pick song', metadata: { fields: { source: { stringValue: 'node' } } } },
      { id: 'node-2', vector: embedded.vectors[1].values },
    ],
  });
  assert.strictEqual(upserted.upserted, '2');

  const recommended = await call(rec, 'Recommend', { history: ['node-1', 'not-an-item'], k: 3, explain: true });
  assert.strictEqual(recommended.items.length, 3);
  assert.deepStrictEqual(recommended.unknown_ids, ['not-an-item']);
  assert(recommended.items.every((it) => it.id !== 'node-1' && it.because.includes('node-1')));

  // a sharded catalogue's user: the history's vectors (from the shard that owns them) -> EmbedUser,
  // whose vector Recommend ranks as that history
  const owned = await call(rec, 'GetItem', { id: 'node-1', include_vector: true });
  const user = await call(rec, 'EmbedUser', { history_vectors: [{ values: owned.item.vector }] });
  assert.strictEqual(user.vector.values.length, info.dim);
  const byVector = await call(rec, 'Recommend', { user_vector: user.vector.values, exclude: ['node-1'], k: 3 });
  assert.deepStrictEqual(byVector.items.map((it) => it.id), recommended.items.map((it) => it.id));

  let badK = null;
  try {
    await call(rec, 'Recommend', { history: ['node-1'], k: 0 });
  } catch (err) {
    badK = { code: err.code, details: err.details };
  }
  assert(badK && badK.code === grpc.status.INVALID_ARGUMENT, `k=0 gave ${JSON.stringify(badK)}`);

  console.log(JSON.stringify({
    health: overall.status,
    model_dim: info.dim,
    embed_dims: embedded.vectors.map((v) => v.values.length),
    upserted: Number(upserted.upserted),
    catalogue_size: Number(upserted.catalogue_size),
    recommended: recommended.items.map((it) => ({ id: it.id, score: it.score, because: it.because })),
    embed_user_dim: user.vector.values.length,
    bad_k: badK,
  }));
  healthClient.close();
  rec.close();
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
