import { once } from 'node:events'
import { createServer, connect, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { pastSendLimit, REPLAY_BACKLOG_MAX_BYTES, writeReplayWhole } from '../../lib/transport/replay-backlog.js'

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
const chunk = Buffer.alloc(64 * 1024, 'x')

t.test('what a replay leaves queued is allowed on top of the limit until the socket drains, then no more', async (t) => {
  const { writer, reader } = await socketPair(t)
  const owner = {}
  const whole = writeReplayWhole(owner, writer, () => writer.writableLength, LIMIT, () => {
    for (let i = 0; i < 160; i++) writer.write(chunk) // 10 MiB
  })
  t.ok(whole, 'the replay went out whole')
  const queued = writer.writableLength
  t.ok(queued > LIMIT, `it left more than the limit queued (${queued} bytes)`)
  t.notOk(pastSendLimit(owner, queued, LIMIT), 'which does not count as too slow')
  t.ok(pastSendLimit(owner, queued + LIMIT + 1, LIMIT), 'but a further limit\'s worth on top of it does')
  t.ok(pastSendLimit({}, queued, LIMIT), 'and another connection with as much queued is too slow')

  reader.resume()
  await once(writer, 'drain')
  t.ok(pastSendLimit(owner, LIMIT + 1, LIMIT), 'once drained, the plain limit holds again')
})

t.test('a replay that would leave more than REPLAY_BACKLOG_MAX_BYTES queued is refused; one into a drained socket is not counted', async (t) => {
  const { writer } = await socketPair(t)
  const over = writeReplayWhole({}, writer, () => writer.writableLength, LIMIT, () => {
    for (let i = 0; i < REPLAY_BACKLOG_MAX_BYTES / chunk.length + 256; i++) writer.write(chunk) // the kernel takes a few MiB of it
  })
  t.notOk(over, 'refused: the caller cuts the connection as too slow')

  const small = {}
  t.ok(writeReplayWhole(small, null, () => 0, LIMIT, () => {}), 'without a socket to watch, counted as live events are')
  t.ok(pastSendLimit(small, LIMIT + 1, LIMIT), 'so nothing is allowed beyond the limit')
})
