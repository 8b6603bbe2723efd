import t from 'tap'
import fc from 'fast-check'
import { requireService } from './helper.js'
import { eventually, OwnRedis, redisAvailable, redisClient } from './redis-fixture.js'
import { monitorRedis, parseMonitorLine } from './redis-monitor.js'

// The MONITOR reader the Redis tests rely on to see what Redis was sent (test/support/redis-monitor.ts).
const available = await redisAvailable()

t.test('every command is seen with its exact arguments, even one sent right behind MONITOR', async (t) => {
  if (!requireService(t, 'redis-server', available)) return
  const own = await OwnRedis.start(t)
  const busy = await redisClient(t, undefined, own.url)
  // Traffic in flight while MONITOR starts: the case ioredis's monitor() died on.
  const running = { stop: false }
  const traffic = (async () => { while (!running.stop) await busy.echo('background') })()
  const monitor = await monitorRedis(t, own.url)
  const seen: Array<{ args: string[], source: string }> = []
  monitor.onCommand((args, source) => seen.push({ args, source }))
  const awkward = ['quote " backslash \\ newline \n cr \r tab \t', 'ünïcødé €', '\x00\x01\x7f', '']
  await busy.call('ECHO', awkward[0])
  await busy.call('HSET', 'monitor-test', awkward[1], awkward[2])
  await busy.call('SET', 'monitor-test-empty', awkward[3])
  await busy.eval("return redis.call('GET', KEYS[1])", 1, 'monitor-test-empty')
  running.stop = true
  await traffic
  await eventually('MONITOR shows the GET from Lua', () => seen.some((c) => c.source === 'lua'))
  t.same(seen.find((c) => c.args[0].toLowerCase() === 'echo' && c.args[1] !== 'background')?.args, ['ECHO', awkward[0]])
  t.same(seen.find((c) => c.args[0].toLowerCase() === 'hset')?.args, ['HSET', 'monitor-test', awkward[1], awkward[2]])
  t.same(seen.find((c) => c.args[0].toLowerCase() === 'set')?.args, ['SET', 'monitor-test-empty', ''])
  t.same(seen.find((c) => c.source === 'lua')?.args, ['GET', 'monitor-test-empty'])
  t.match(seen.find((c) => c.args[0].toLowerCase() === 'set')?.source, /^127\.0\.0\.1:\d+$/, 'a client is named by its address')
})

t.test('a line is read back to what was sent, for any arguments', async (t) => {
  // Redis's sdscatrepr: printable ASCII as is, \\ and \" escaped, \n \r \t \a \b, any other byte \xHH.
  const repr = (bytes: Buffer): string => {
    let out = '"'
    for (const b of bytes) {
      const c = String.fromCharCode(b)
      if (c === '\\' || c === '"') out += '\\' + c
      else if (c === '\n') out += '\\n'
      else if (c === '\r') out += '\\r'
      else if (c === '\t') out += '\\t'
      else if (c === '\x07') out += '\\a'
      else if (c === '\b') out += '\\b'
      else if (b >= 0x20 && b < 0x7f) out += c
      else out += '\\x' + b.toString(16).padStart(2, '0')
    }
    return out + '"'
  }
  fc.assert(fc.property(fc.array(fc.string({ unit: 'grapheme' }), { minLength: 1, maxLength: 5 }), (args) => {
    const line = `+1796112526.185206 [0 127.0.0.1:41586] ${args.map((a) => repr(Buffer.from(a, 'utf8'))).join(' ')}`
    t.same(parseMonitorLine(line), { args, source: '127.0.0.1:41586' })
  }), { numRuns: 300 })
  t.equal(parseMonitorLine('+OK'), null, 'not a command line')
  t.equal(parseMonitorLine('+1.2 [0 lua] "unterminated'), null, 'a cut line')
})
