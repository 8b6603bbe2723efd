import { createHmac, generateKeyPairSync, type KeyObject, sign } from 'node:crypto'
import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import { buildApp } from '../../app.js'
import { mintToken } from '../../lib/auth/token.js'
import { configFrom } from '../../lib/ops/config.js'
import { loggerOptions } from '../../lib/ops/logging.js'
import { WsClient } from '../support/helper.js'

/**
 * Tokens signed by an identity provider's private key, verified with JWT_PUBLIC_KEY
 * (docs/protocol.md, Tokens): RS256 and ES256 accepted; an HS256 token refused, even one
 * signed with the public key's text as its secret (the algorithm-confusion attack).
 */
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const pemOf = (key: KeyObject) => key.export({ type: 'spki', format: 'pem' }).toString()
const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
const claims = (sub: string, roles: string[] = []) => ({ sub, roles, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600 })

function signed (alg: 'RS256' | 'ES256' | 'HS256', key: KeyObject | string, body: object): string {
  const unsigned = `${part({ alg, typ: 'JWT' })}.${part(body)}`
  const signature = typeof key === 'string'
    ? createHmac('sha256', key).update(unsigned).digest()
    : sign('sha256', Buffer.from(unsigned), { key, dsaEncoding: 'ieee-p1363' })
  return `${unsigned}.${signature.toString('base64url')}`
}

async function serve (t: Test, env: Record<string, string>) {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, done) { lines.push(String(chunk)); done() } })
  const app = await buildApp(configFrom({ LOG_LEVEL: 'info', ...env }), { logger: { ...loggerOptions('info'), stream: sink } })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const stats = async (jwt: string) => (await fetch(`http://127.0.0.1:${port}/realtime/stats`, { headers: { authorization: `Bearer ${jwt}` } })).status
  return { lines, stats, wsUrl: `ws://127.0.0.1:${port}/ws` }
}

t.test('RS256 with an RSA public key: accepted over WebSocket and HTTP; HS256 refused, even signed with the key', async (t) => {
  const publicPem = pemOf(rsa.publicKey)
  const server = await serve(t, { JWT_PUBLIC_KEY: publicPem })
  const ws = await WsClient.connect(t, server.wsUrl, signed('RS256', rsa.privateKey, claims('rs-user')))
  t.match(ws.greeting, { payload: { userId: 'rs-user' } })
  t.equal(await server.stats(signed('RS256', rsa.privateKey, claims('ops', ['admin']))), 200)
  t.equal(await server.stats(signed('HS256', publicPem, claims('ops', ['admin']))), 401, 'algorithm confusion refused')
  t.equal(await server.stats(signed('RS256', generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, claims('ops', ['admin']))), 401, 'another key refused')
})

t.test('ES256 with an EC public key', async (t) => {
  const server = await serve(t, { JWT_PUBLIC_KEY: pemOf(ec.publicKey) })
  t.equal(await server.stats(signed('ES256', ec.privateKey, claims('ops', ['admin']))), 200)
  t.equal(await server.stats(signed('ES256', generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, claims('ops', ['admin']))), 401)
})

t.test('JWT_SECRET and JWT_PUBLIC_KEY both set: the public key alone verifies, and the log says so', async (t) => {
  const server = await serve(t, { JWT_PUBLIC_KEY: pemOf(rsa.publicKey), JWT_SECRET: 'also-a-secret' })
  t.ok(server.lines.some((l) => l.includes('JWT_SECRET and JWT_PUBLIC_KEY are both set')), 'warned at start')
  t.equal(await server.stats(mintToken('also-a-secret', { sub: 'ops', roles: ['admin'], ttlSeconds: 600 })), 401, 'a token signed with the secret is refused')
  t.equal(await server.stats(signed('RS256', rsa.privateKey, claims('ops', ['admin']))), 200)
})
