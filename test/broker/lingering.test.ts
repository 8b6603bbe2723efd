import t from 'tap'
import fc from 'fast-check'
import { Lingering } from '../../lib/broker/lingering.js'

const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))

/** A Lingering whose releases are recorded, with their time since the start. */
function recorded (ms: number, limit: number) {
  const released: string[] = []
  const at = new Map<string, number>()
  const t0 = performance.now()
  const lingering = new Lingering(ms, limit, (channel) => {
    released.push(channel)
    at.set(channel, performance.now() - t0)
  })
  return { lingering, released, at }
}

t.test('a channel lingers its time, then is released once; one taken back before is never released', async (t) => {
  const { lingering, released, at } = recorded(80, 10)
  lingering.start('a')
  lingering.start('b')
  lingering.start('a') // already lingering: keeps its start
  t.ok(lingering.has('a') && lingering.has('b'))
  t.equal(lingering.cancel('b'), true, 'b was lingering')
  t.equal(lingering.cancel('b'), false, 'and is no longer')
  // Not before its time: judged by when it was released (below), not by a sleep that a
  // loaded machine can stretch past the linger (CI, 2 cores).
  await sleep(160)
  t.same(released, ['a'], 'a released once, b (taken back) never')
  t.ok(at.get('a')! >= 75, `released after its linger (${at.get('a')!.toFixed(0)} ms)`)
  t.equal(lingering.size, 0)
})

t.test('each channel is released at its own time, in the order it started lingering', async (t) => {
  const { lingering, released, at } = recorded(100, 10)
  const t0 = performance.now()
  lingering.start('first')
  await sleep(60)
  const secondStarted = performance.now() - t0
  lingering.start('second')
  // Judged by when each was released, not by sleeps a loaded machine can stretch.
  while (released.length < 2) await sleep(20)
  t.same(released, ['first', 'second'], 'in the order they started lingering')
  t.ok(at.get('first')! >= 95, `the first lingered its time (released at ${at.get('first')!.toFixed(0)} ms)`)
  t.ok(at.get('second')! >= secondStarted + 95,
    `the second lingered its own time from its start at ${secondStarted.toFixed(0)} ms (released at ${at.get('second')!.toFixed(0)} ms)`)
})

t.test('past the limit, the channel that has lingered longest is released at once', async (t) => {
  const { lingering, released } = recorded(60_000, 2)
  lingering.start('a')
  lingering.start('b')
  t.same(released, [])
  lingering.start('c')
  t.same(released, ['a'], 'the oldest made room')
  lingering.cancel('b')
  lingering.start('d')
  t.same(released, ['a'], 'room was left by the one taken back')
  lingering.start('e')
  t.same(released, ['a', 'c'])
  t.equal(lingering.size, 2)
  lingering.clear()
})

t.test('a limit of 0 releases at once; clear releases nothing', async (t) => {
  const none = recorded(60_000, 0)
  none.lingering.start('a')
  t.same(none.released, ['a'])
  t.equal(none.lingering.has('a'), false)

  const cleared = recorded(30, 10)
  cleared.lingering.start('x')
  cleared.lingering.clear()
  await sleep(80)
  t.same(cleared.released, [], 'a cleared channel is not released later')
  t.equal(cleared.lingering.size, 0)
})

t.test('whatever is started and taken back: never more than the limit linger, and exactly the longest-lingering ones are released to make room', async (t) => {
  const op = fc.oneof(
    fc.record({ start: fc.integer({ min: 0, max: 30 }) }),
    fc.record({ cancel: fc.integer({ min: 0, max: 30 }) })
  )
  fc.assert(fc.property(fc.integer({ min: 0, max: 8 }), fc.array(op, { maxLength: 200 }), (limit, ops) => {
    const released: string[] = []
    const lingering = new Lingering(60_000, limit, (channel) => released.push(channel))
    // The model: channels lingering, oldest first, and those released to make room.
    const model: string[] = []
    const expected: string[] = []
    for (const o of ops) {
      if ('start' in o) {
        const channel = `c${o.start}`
        lingering.start(channel)
        if (!model.includes(channel)) {
          if (limit === 0) {
            expected.push(channel)
            continue
          }
          while (model.length >= limit) expected.push(model.shift()!)
          model.push(channel)
        }
      } else {
        const channel = `c${o.cancel}`
        const was = model.indexOf(channel)
        if (lingering.cancel(channel) !== (was >= 0)) return false
        if (was >= 0) model.splice(was, 1)
      }
      if (lingering.size > Math.max(0, limit) || lingering.size !== model.length) return false
    }
    const still = model.every((channel) => lingering.has(channel))
    lingering.clear()
    return still && released.join() === expected.join()
  }))
  t.pass('bounded and consistent with the model')
})
