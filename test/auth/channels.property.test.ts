import fc from 'fast-check'
import t from 'tap'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { canSubscribe, ChannelName, defaultChannels, isValidChannelName } from '../../lib/auth/channels.js'
import type { Identity } from '../../lib/auth/identity.js'

/**
 * Channel names arrive from clients in frames, query strings and bodies (docs/protocol.md, Channels).
 * The regular expression and the schema agree on every input, and the channel rules answer
 * any valid name for any identity without throwing, never opening another user's channel.
 * A failure prints fast-check's seed and path: rerun with `{ seed, path }` to replay it.
 */
const NUM_RUNS = 2000
const schema = TypeCompiler.Compile(ChannelName)
const ALPHABET = /^[A-Za-z0-9_\-:.@]$/

/** Names near the rules: known prefixes, the alphabet's edges, and any other character. */
const nameLike = fc.tuple(
  fc.constantFrom('', 'user:', 'room:', 'product:', 'event:', 'admin', 'orders', 'inventory', 'products', 'user', 'USER:'),
  fc.string({ unit: fc.oneof(fc.constantFrom(...'aZ09_-:.@'.split('')), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength: 210 })
).map(([prefix, rest]) => prefix + rest)

const identity: fc.Arbitrary<Identity> = fc.record({
  userId: fc.option(fc.oneof(fc.stringMatching(/^[A-Za-z0-9_\-:.@]{1,20}$/), fc.string({ maxLength: 20 })), { nil: null }),
  roles: fc.array(fc.constantFrom('admin', 'service', 'user', 'Admin', ''), { maxLength: 3 })
}) as fc.Arbitrary<Identity>

const reference = (name: string): boolean =>
  name.length >= 1 && name.length <= 200 && [...name].every((c) => ALPHABET.test(c)) && [...name].length === name.length

t.test('isValidChannelName, the schema and the character rule agree on any string', async (t) => {
  fc.assert(fc.property(fc.oneof(nameLike, fc.string({ unit: 'binary', maxLength: 260 })), (name) => {
    const valid = isValidChannelName(name)
    if (valid !== schema.Check(name)) throw new Error(`regex says ${valid}, schema says ${!valid}`)
    if (valid !== reference(name)) throw new Error(`regex says ${valid}, the character rule says ${!valid}`)
  }), { numRuns: NUM_RUNS })
  fc.assert(fc.property(fc.anything(), (value) => {
    if (typeof value !== 'string' && isValidChannelName(value)) throw new Error('a non-string is a valid name')
  }), { numRuns: NUM_RUNS / 4 })
  t.pass('agree')
})

t.test('canSubscribe answers any valid name for any identity; user channels only for their user', async (t) => {
  fc.assert(fc.property(nameLike.filter(isValidChannelName), identity, (name, who) => {
    const allowed = canSubscribe(who, name)
    if (typeof allowed !== 'boolean') throw new Error('not a boolean')
    if (allowed && name.startsWith('user:') && name !== `user:${who.userId}`) throw new Error(`${who.userId} may read ${name}`)
    if (allowed && (name === 'admin' || name === 'orders') && !who.roles.includes('admin')) throw new Error(`non-admin may read ${name}`)
  }), { numRuns: NUM_RUNS })
  fc.assert(fc.property(identity, (who) => {
    for (const channel of defaultChannels(who)) {
      if (!canSubscribe(who, channel)) throw new Error(`default channel ${channel} is not readable by its own identity`)
    }
  }), { numRuns: NUM_RUNS / 4 })
  t.pass('answered')
})
