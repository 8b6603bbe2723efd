import fc from 'fast-check'
import t from 'tap'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { canSubscribe, ChannelName, defaultChannels, isValidChannelName, parseChannelList } from '../../lib/auth/channels.js'
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

t.test('a channel list (SSE): every valid name in order, or a bad list naming what is wrong; never a throw', async (t) => {
  // Lists of names near the rules, joined with commas and optional spaces around them.
  const list = fc.array(fc.tuple(fc.constantFrom('', ' ', '  '), nameLike, fc.constantFrom('', ' ')), { maxLength: 6 })
  fc.assert(fc.property(list, (parts) => {
    const text = parts.map(([before, name, after]) => before + name + after).join(',')
    const result = parseChannelList(text)
    const names = parts.map(([, name]) => name.trim())
    if (text.trim() === '') {
      if (!result.ok || result.channels.length !== 0) throw new Error(`${JSON.stringify(text)}: not an empty list`)
      return
    }
    const allValid = text.split(',').every((c) => reference(c.trim()))
    if (result.ok !== allValid) throw new Error(`${JSON.stringify(text)}: ok ${String(result.ok)}, expected ${String(allValid)}`)
    if (result.ok && JSON.stringify(result.channels) !== JSON.stringify(names)) throw new Error(`${JSON.stringify(text)}: ${JSON.stringify(result.channels)}`)
    if (!result.ok && !/^(channels: name \d+ of \d+ is empty|invalid channel name: )/.test(result.message)) throw new Error(result.message)
  }), { numRuns: NUM_RUNS })
  t.same(parseChannelList(undefined), { ok: true, channels: [] })
  t.same(parseChannelList(' product:7 , room:1'), { ok: true, channels: ['product:7', 'room:1'] })
  t.same(parseChannelList('a,,b'), { ok: false, message: 'channels: name 2 of 3 is empty' })
  t.same(parseChannelList('a,'), { ok: false, message: 'channels: name 2 of 2 is empty' })
})
