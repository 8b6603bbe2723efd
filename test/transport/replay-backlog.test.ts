import { once } from 'node:events'
import { createServer, connect, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import {
  pastSendLimit, REPLAY_BACKLOG_MAX_BYTES, REPLAY_BACKLOG_TOTAL_BYTES, REPLAY_BACKLOG_USER_BYTES, replayBacklogAllowed, replayMustWait, type ReplayTarget,
  writeReplayWhole
} from '../../lib/transport/replay-backlog.js'

/** A real loopback socket pair: `writer` queues what `reader` (paused) has not read. */
async function socketPair (t: Test): Promise<{ writer: Socket, reader: Socket }> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const accepted = once(server, 'connection')
  const writer = connect((server.address() as { port: number }).port, '127.0.0.1')
  await once(writer, 'connect')
  const [reader] = await accepted as [Socket]
  reader.pause()
  t.teardown(() => { writer.destroy(); reader.destroy(); server.close() })
  return { writer, reader }
}

const LIMIT = 1024 * 1024
/** A connection of `user` writing to `writer`, with the limit above. */
const target = (writer: Socket | null, user = 'u:1'): ReplayTarget => ({ user, socket: writer, queued: () => writer?.writableLength ?? 0, limit: LIMIT })
const chunk = Buffer.alloc(64 * 1024, 'x')
const noop = (): void => {}
const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))

t.test('what a replay leaves queued is allowed on top of the limit until the socket drains, then no more', async (t) => {
  const { writer, reader } = await socketPair(t)
  const owner = {}
  const whole = writeReplayWhole(owner, target(writer), 10 * 1024 * 1024, () => {
    for (let i = 0; i < 160; i++) writer.write(chunk) // 10 MiB
  }, noop)
  t.ok(whole, 'the replay went out whole')
  const queued = writer.writableLength
  t.ok(queued > LIMIT, `it left more than the limit queued (${queued} bytes)`)
  t.equal(replayBacklogAllowed(), queued - LIMIT, 'counted in the instance\'s total')
  t.notOk(pastSendLimit(owner, queued, LIMIT), 'which does not count as too slow')
  t.notOk(pastSendLimit(owner, queued + LIMIT, LIMIT), 'nor do live frames after it, up to a limit\'s worth')
  t.ok(pastSendLimit(owner, queued + LIMIT + 1, LIMIT), 'but a further limit\'s worth on top of it does')
  t.ok(pastSendLimit({}, queued, LIMIT), 'and another connection with as much queued is too slow')

  reader.resume()
  await once(writer, 'drain')
  t.ok(pastSendLimit(owner, LIMIT + 1, LIMIT), 'once drained, the plain limit holds again')
  t.equal(replayBacklogAllowed(), 0, 'and the total is given back')
})

t.test('a replay past REPLAY_BACKLOG_MAX_BYTES is cut while it is being written', async (t) => {
  const { writer } = await socketPair(t)
  const owner = {}
  let writtenPastCap = 0
  // Its size as announced fits; what it writes does not (a lower bound is all callers know).
  const whole = writeReplayWhole(owner, target(writer), REPLAY_BACKLOG_MAX_BYTES / 2, () => {
    for (let i = 0; i < REPLAY_BACKLOG_MAX_BYTES / chunk.length + 256; i++) {
      if (pastSendLimit(owner, writer.writableLength, LIMIT)) break // what a connection's writable() does
      writer.write(chunk)
      writtenPastCap = writer.writableLength
    }
  }, noop)
  t.notOk(whole, 'refused: the caller cuts the connection as too slow')
  t.ok(writtenPastCap <= LIMIT + REPLAY_BACKLOG_MAX_BYTES + chunk.length, `writing stopped at the cap (${writtenPastCap} bytes queued)`)
  t.equal(replayBacklogAllowed(), 0, 'nothing is allowed')
})

t.test('the instance\'s total bounds the allowances of every connection together', async (t) => {
  const owners: object[] = []
  let refused = 0
  for (let n = 0; n < REPLAY_BACKLOG_TOTAL_BYTES / (32 * 1024 * 1024) + 2; n++) {
    const { writer } = await socketPair(t)
    const owner = {}
    owners.push(owner)
    // Each its own user: the users' bound is not the one under test.
    const whole = writeReplayWhole(owner, target(writer, `u:total-${n}`), 32 * 1024 * 1024, () => {
      for (let i = 0; i < 512; i++) writer.write(chunk) // 32 MiB
    }, noop)
    if (!whole) refused++
  }
  t.ok(refused >= 1, `replays past the total were refused (${refused})`)
  t.ok(replayBacklogAllowed() <= REPLAY_BACKLOG_TOTAL_BYTES, `the total stays within ${REPLAY_BACKLOG_TOTAL_BYTES} (${replayBacklogAllowed()})`)
})

t.test('a backlog not drained in time makes the connection too slow, and a closed socket gives its allowance back', async (t) => {
  const { writer } = await socketPair(t)
  const before = replayBacklogAllowed()
  let cut = 0
  t.ok(writeReplayWhole({}, target(writer), 16 * 1024 * 1024, () => {
    for (let i = 0; i < 256; i++) writer.write(chunk) // 16 MiB: more than the kernel takes
  }, () => { cut++ }, 200))
  await sleep(400)
  t.equal(cut, 1, 'cut as too slow once the time was up')
  t.equal(replayBacklogAllowed(), before, 'its allowance given back')

  const other = await socketPair(t)
  t.ok(writeReplayWhole({}, target(other.writer), 16 * 1024 * 1024, () => {
    for (let i = 0; i < 256; i++) other.writer.write(chunk)
  }, () => { cut++ }))
  t.ok(replayBacklogAllowed() > before)
  other.writer.destroy()
  await once(other.writer, 'close')
  t.equal(replayBacklogAllowed(), before, 'a socket that closes gives its allowance back')

  const small = {}
  t.ok(writeReplayWhole(small, target(null), 0, () => {}, noop), 'without a socket to watch, counted as live events are')
  t.ok(pastSendLimit(small, LIMIT + 1, LIMIT), 'so nothing is allowed beyond the limit')
})

t.test('a replay that cannot fit the room left is refused before a byte of it is written', async (t) => {
  const { writer } = await socketPair(t)
  let written = false
  const whole = writeReplayWhole({}, target(writer), LIMIT + REPLAY_BACKLOG_MAX_BYTES + 1, () => { written = true }, noop)
  t.notOk(whole, 'refused: the caller cuts the connection as too slow')
  t.notOk(written, 'without writing any of it')
  t.equal(writer.writableLength, 0)
  t.equal(replayBacklogAllowed(), 0)
})

t.test('one user\'s connections share REPLAY_BACKLOG_USER_BYTES: the rest of the instance\'s room stays for others', async (t) => {
  const before = replayBacklogAllowed()
  const write30MiB = (writer: Socket) => () => { for (let i = 0; i < 480; i++) writer.write(chunk) }
  const outcomes: boolean[] = []
  for (let n = 0; n < 4; n++) {
    const { writer } = await socketPair(t)
    outcomes.push(writeReplayWhole({}, target(writer, 'u:greedy'), 30 * 1024 * 1024, write30MiB(writer), noop))
  }
  t.same(outcomes.slice(0, 2), [true, true], 'the user\'s first replays are allowed')
  t.ok(outcomes.slice(2).every((whole) => !whole), 'then its next ones do not fit what it has left')
  const held = replayBacklogAllowed() - before
  t.ok(held <= REPLAY_BACKLOG_USER_BYTES, `the user holds at most ${REPLAY_BACKLOG_USER_BYTES} (${held})`)
  const other = await socketPair(t)
  t.ok(writeReplayWhole({}, target(other.writer, 'u:other'), 30 * 1024 * 1024, write30MiB(other.writer), noop),
    'another user\'s replay still fits')
})

t.test('replayMustWait: true only when room others hold stands in the way, not the connection\'s own bound', async (t) => {
  const write30MiB = (writer: Socket) => () => { for (let i = 0; i < 480; i++) writer.write(chunk) }
  const fresh = await socketPair(t)
  t.notOk(replayMustWait({}, target(fresh.writer, 'u:waits'), 30 * 1024 * 1024), 'with the room free, nothing waits')
  t.notOk(replayMustWait({}, target(fresh.writer, 'u:waits'), LIMIT), 'nor does a replay within the send buffer')
  t.notOk(replayMustWait({}, target(fresh.writer, 'u:waits'), LIMIT + REPLAY_BACKLOG_MAX_BYTES + 1), 'nor one past the connection\'s own bound: waiting would not help')
  t.notOk(replayMustWait({}, target(null, 'u:waits'), 100 * 1024 * 1024), 'nor one without a socket (counted as live events are)')

  const holder = {}
  const first = await socketPair(t)
  t.ok(writeReplayWhole(holder, target(first.writer, 'u:waits'), 30 * 1024 * 1024, write30MiB(first.writer), noop))
  const second = await socketPair(t)
  t.ok(writeReplayWhole({}, target(second.writer, 'u:waits'), 30 * 1024 * 1024, write30MiB(second.writer), noop))
  t.ok(first.writer.writableLength + second.writer.writableLength > 50 * 1024 * 1024, `the user holds most of its room (${first.writer.writableLength} + ${second.writer.writableLength})`)
  t.ok(replayMustWait({}, target(fresh.writer, 'u:waits'), 30 * 1024 * 1024), 'its next replay must wait for it')
  t.notOk(replayMustWait(holder, target(fresh.writer, 'u:waits'), 30 * 1024 * 1024 - first.writer.writableLength),
    'except on a connection whose own allowance it would replace')
  t.notOk(replayMustWait({}, target(fresh.writer, 'u:other'), 30 * 1024 * 1024), 'another user\'s does not')
  t.equal(writeReplayWhole({}, target(fresh.writer, 'u:waits'), 30 * 1024 * 1024, write30MiB(fresh.writer), noop), false,
    'and what it says is what writing would find')

  first.reader.resume()
  second.reader.resume()
  await Promise.all([once(first.writer, 'drain'), once(second.writer, 'drain')])
  const later = await socketPair(t)
  t.notOk(replayMustWait({}, target(later.writer, 'u:waits'), 30 * 1024 * 1024), 'once they drained, it need not wait')
})

t.test('replayMustWait: the instance\'s room, held by many users, makes the next user\'s replay wait', async (t) => {
  const write30MiB = (writer: Socket) => () => { for (let i = 0; i < 480; i++) writer.write(chunk) }
  let n = 0
  // Each its own user, until the instance's total leaves less than one more replay.
  while (replayBacklogAllowed() <= REPLAY_BACKLOG_TOTAL_BYTES - 30 * 1024 * 1024 && n < 20) {
    const { writer } = await socketPair(t)
    t.ok(writeReplayWhole({}, target(writer, `u:many-${n++}`), 30 * 1024 * 1024, write30MiB(writer), noop))
  }
  const next = await socketPair(t)
  t.ok(replayMustWait({}, target(next.writer, 'u:next'), 30 * 1024 * 1024), `after ${n} users' replays, a new user's must wait`)
  t.notOk(replayMustWait({}, target(next.writer, 'u:next'), LIMIT), 'though one within the send buffer need not')
})
