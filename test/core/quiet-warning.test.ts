import t from 'tap'
import { QuietWarning } from '../../lib/core/quiet-warning.js'

t.test('a warning is said at most once per interval, with how many were held back since', async (t) => {
  let now = 0
  const warning = new QuietWarning(5000, () => now)
  t.equal(warning.occurred(), 0, 'the first is said')
  t.equal(warning.occurred(), undefined, 'the next within the interval is held back')
  now = 4999
  t.equal(warning.occurred(), undefined)
  now = 5000
  t.equal(warning.occurred(), 2, 'the next after it is said, counting the two held back')
  now = 20_000
  t.equal(warning.occurred(), 0, 'none held back since')
})
