import t from 'tap'
import { QuietWarning } from '../../lib/core/quiet-warning.js'

t.test('a warning is said at most once per interval, with how many were held back since', async (t) => {
  let now = 0
  const warning = new QuietWarning(5000, { now: () => now })
  t.equal(warning.occurred(), 0, 'the first is said')
  t.equal(warning.occurred(), undefined, 'the next within the interval is held back')
  now = 4999
  t.equal(warning.occurred(), undefined)
  now = 5000
  t.equal(warning.occurred(), 2, 'the next after it is said, counting the two held back')
  now = 20_000
  t.equal(warning.occurred(), 0, 'none held back since')
})

t.test('a burst\'s held-back tail is said when its interval ends, not only with the next line', async (t) => {
  const told: number[] = []
  const warning = new QuietWarning(50, { onHeldBack: (n) => told.push(n) })
  t.equal(warning.occurred(), 0, 'the first is said')
  for (let i = 0; i < 7; i++) t.equal(warning.occurred(), undefined)
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.same(told, [7], 'the seven held back are told once the interval is over, with nothing after them')
  t.equal(warning.occurred(), 0, 'what was told is not counted again')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.same(told, [7], 'an interval that held nothing back tells nothing')
})

t.test('the tail\'s line counts as its interval\'s line: a new burst right after is held back, and told in turn', async (t) => {
  let now = 0
  const told: number[] = []
  const warning = new QuietWarning(50, { now: () => now, onHeldBack: (n) => told.push(n) })
  t.equal(warning.occurred(), 0)
  t.equal(warning.occurred(), undefined)
  now = 60
  await new Promise((resolve) => setTimeout(resolve, 150))
  t.same(told, [1], 'the one held back')
  now = 70
  t.equal(warning.occurred(), undefined, 'within the interval of the tail\'s line: held back')
  now = 120
  await new Promise((resolve) => setTimeout(resolve, 150))
  t.same(told, [1, 1], 'and told at the end of that interval')
})
