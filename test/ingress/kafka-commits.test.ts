import { setTimeout as delay } from 'node:timers/promises'
import t from 'tap'
import { BackgroundCommits } from '../../lib/ingress/kafka-commits.js'

/**
 * The background committer alone, no Kafka: when commits start, that only one is in
 * flight, that a flush commits what is left. (With real Kafka: the kafka-batch and
 * kafka-delivery tests check what ends up committed.)
 */
function committer (intervalMs: number, fail = false) {
  const started: number[] = []
  const errors: unknown[] = []
  let release: () => void = () => {}
  let blocked = false
  const commits = new BackgroundCommits(async () => {
    started.push(Date.now())
    if (blocked) await new Promise<void>((resolve) => { release = resolve })
    if (fail) throw new Error('coordinator away')
  }, intervalMs, (err) => errors.push(err))
  return { commits, started, errors, block: () => { blocked = true }, release: () => { blocked = false; release() } }
}

t.test('resolved offsets are committed once per interval, whatever the number of messages', async (t) => {
  const { commits, started } = committer(100)
  t.teardown(() => commits.stop())
  for (let i = 0; i < 1000; i++) commits.resolved()
  t.equal(started.length, 0, 'not at once: the interval since construction has not passed')
  await delay(150)
  t.equal(started.length, 1, 'one commit for all of them')
  commits.resolved()
  t.equal(started.length, 1, 'the next waits for the interval')
  await delay(150)
  t.equal(started.length, 2)
  await delay(150)
  t.equal(started.length, 2, 'nothing resolved, nothing committed')
})

t.test('one commit in flight at a time; what was resolved meanwhile follows it', async (t) => {
  const { commits, started, block, release } = committer(0)
  t.teardown(() => commits.stop())
  block()
  commits.resolved()
  t.equal(started.length, 1, 'due at once: started')
  commits.resolved()
  commits.resolved()
  t.equal(started.length, 1, 'not while one is in flight')
  release()
  await delay(20)
  t.equal(started.length, 2, 'the offsets resolved meanwhile in a second commit')
})

t.test('flush waits for the commit in flight and commits the rest; stop ends background commits', async (t) => {
  const { commits, started, block, release } = committer(10_000)
  commits.resolved()
  t.equal(started.length, 0, 'scheduled, not started')
  await commits.flush()
  t.equal(started.length, 1, 'flush commits at once')
  await commits.flush()
  t.equal(started.length, 1, 'nothing left: nothing committed')

  const second = committer(0)
  second.block()
  second.commits.resolved()
  second.commits.resolved()
  let flushed = false
  const flushing = second.commits.flush().then(() => { flushed = true })
  await delay(10)
  t.notOk(flushed, 'waits for the commit in flight')
  second.release()
  await flushing
  t.equal(second.started.length, 2, 'then commits what was resolved since')

  commits.stop()
  commits.resolved()
  await delay(20)
  t.equal(started.length, 1, 'stopped: no background commit')
  await commits.flush()
  t.equal(started.length, 2, 'a flush still commits')
  block()
  release()
})

t.test('a failed background commit is reported and the next one carries on; a failed flush rejects', async (t) => {
  const { commits, started, errors } = committer(0, true)
  t.teardown(() => commits.stop())
  commits.resolved()
  await delay(10)
  t.equal(errors.length, 1, 'reported')
  commits.resolved()
  await delay(10)
  t.equal(started.length, 2, 'tried again with the next resolved offsets')
  commits.stop()
  commits.resolved()
  await t.rejects(commits.flush(), /coordinator away/)
})
