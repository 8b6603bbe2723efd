import { createHmac, randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'

export interface TokenClaims {
  sub?: string
  roles?: string[]
  /** Lifetime in seconds; omit for a token without `exp`. */
  ttlSeconds?: number
  [claim: string]: unknown
}

const b64url = (data: string | Buffer): string => Buffer.from(data).toString('base64url')

/** Signs an HS256 JWT (what `npm run token` prints and the tests use). */
export function mintToken (secret: string, { ttlSeconds, ...claims }: TokenClaims, now = Date.now()): string {
  const iat = Math.floor(now / 1000)
  const body: Record<string, unknown> = { ...claims, iat }
  if (ttlSeconds !== undefined) body.exp = iat + ttlSeconds
  const unsigned = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(body))}`
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`
}

/** Where a development run keeps the secret it made, so `npm run token` can sign with it. */
export const DEV_SECRET_FILE = resolve(process.cwd(), '.jwt-dev-secret')

/** Makes a secret for this run (never in production) and leaves it for `npm run token`. */
export function makeDevSecret (file = DEV_SECRET_FILE): string {
  const secret = randomBytes(32).toString('base64url')
  writeFileSync(file, secret + '\n', { mode: 0o600 })
  return secret
}

export function readDevSecret (file = DEV_SECRET_FILE): string | undefined {
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined
}
