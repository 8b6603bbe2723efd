/**
 * Prints a JWT for trying the gateway: npm run token -- --sub 42 --role admin
 * Signs with JWT_SECRET, or the secret a development server saved in .jwt-dev-secret.
 */
import { parseArgs } from 'node:util'
import { mintToken, readDevSecret } from '../lib/auth/token.js'

const { values } = parseArgs({
  options: {
    sub: { type: 'string', default: '42' },
    role: { type: 'string', multiple: true, default: [] },
    ttl: { type: 'string', default: '3600' },
    secret: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false }
  }
})

if (values.help === true) {
  process.stdout.write('usage: npm run token -- [--sub 42] [--role admin|service]... [--ttl seconds] [--secret s]\n')
  process.exit(0)
}
const secret = values.secret ?? process.env.JWT_SECRET ?? readDevSecret()
if (secret === undefined || secret === '') {
  process.stderr.write('No secret: set JWT_SECRET, pass --secret, or start the server once in development (it saves .jwt-dev-secret).\n')
  process.exit(1)
}
const ttl = Number(values.ttl)
if (!Number.isInteger(ttl) || ttl <= 0) {
  process.stderr.write('--ttl must be a positive number of seconds\n')
  process.exit(1)
}
process.stdout.write(mintToken(secret, { sub: values.sub, roles: values.role, ttlSeconds: ttl }) + '\n')
