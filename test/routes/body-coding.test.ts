import fc from 'fast-check'
import t from 'tap'
import { buildTestApp, serviceToken } from '../support/helper.js'

/**
 * JSON bodies are read as UTF-8 as sent: bytes that are not UTF-8 are a 400 (they were
 * stored with U+FFFD in their place), another charset or a Content-Encoding a 415 (a
 * gzipped body was a 400 "not valid JSON", a `br` one taken as it was). A black-box audit.
 */

const valid = Buffer.from(JSON.stringify({ channel: 'product:coding', type: 'stock', payload: { name: 'café' } }))

t.test('charsets and content codings', async (t) => {
  const app = await buildTestApp(t)
  const publish = async (body: Buffer, headers: Record<string, string> = {}) => await app.inject({
    method: 'POST',
    url: '/realtime/publish',
    payload: body,
    headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': 'application/json', ...headers }
  })
  t.equal((await publish(valid)).statusCode, 202, 'UTF-8 without a charset')
  for (const type of ['application/json; charset=utf-8', 'application/json;charset=UTF-8', 'application/json; charset="utf8"', 'application/json; charset=US-ASCII']) {
    t.equal((await publish(valid, { 'content-type': type })).statusCode, 202, type)
  }
  for (const type of ['application/json; charset=latin1', 'application/json; charset=utf-16', 'application/json; charset=']) {
    const res = await publish(valid, { 'content-type': type })
    t.equal(res.statusCode, 415, type)
    t.match(res.json(), { statusCode: 415, error: 'Unsupported Media Type', message: /UTF-8 only/ })
  }
  t.equal((await publish(valid, { 'content-encoding': 'identity' })).statusCode, 202, 'Content-Encoding: identity')
  for (const coding of ['gzip', 'br', 'deflate, gzip']) {
    const res = await publish(valid, { 'content-encoding': coding })
    t.equal(res.statusCode, 415, `Content-Encoding: ${coding}`)
    t.match(res.json(), { message: 'Content-Encoding is not supported: send the body uncompressed' })
  }
  const latin1 = Buffer.from('{"channel":"product:coding","type":"stock","payload":{"name":"caf\xe9"}}', 'latin1')
  const res = await publish(latin1)
  t.equal(res.statusCode, 400, 'Latin-1 bytes sent as UTF-8')
  t.match(res.json(), { message: 'body: not valid UTF-8' })
})

t.test('property: a body with bytes that are not UTF-8 anywhere is a 400 naming it, never taken', async (t) => {
  const app = await buildTestApp(t)
  // Bytes that never start or continue a valid UTF-8 sequence where they stand.
  const invalid = fc.oneof(fc.constant([0xff]), fc.constant([0xc0, 0x80]), fc.constant([0xed, 0xa0, 0x80]), fc.constant([0x80]), fc.constant([0xe2, 0x82]))
  await fc.assert(fc.asyncProperty(fc.nat(valid.length), invalid, async (at, bytes) => {
    const body = Buffer.concat([valid.subarray(0, at), Buffer.from(bytes), valid.subarray(at)])
    const res = await app.inject({
      method: 'POST',
      url: '/realtime/publish',
      payload: body,
      headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': 'application/json' }
    })
    return res.statusCode === 400 && res.json().message === 'body: not valid UTF-8'
  }), { numRuns: 200 })
})
