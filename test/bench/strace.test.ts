import t from 'tap'
import { parseStraceSummary } from '../../bench/lib/strace.js'

// bench/connect-syscalls.ts reads its counts from strace -c's table (with and without an errors column).
t.test('parseStraceSummary: calls per syscall, the total line and headers skipped', async (t) => {
  const summary = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 94.23    4.010503        6843       586        46 futex
  3.24    0.137866          33      4058           read
  0.66    0.028145           7      4000           writev
  0.11    0.004884          81        60           write
------ ----------- ----------- --------- --------- ----------------
100.00    4.181398         386     10704        47 total
`
  t.same([...parseStraceSummary(summary)], [['futex', 586], ['read', 4058], ['writev', 4000], ['write', 60]])
  t.same([...parseStraceSummary('strace: Process 1 attached\n')], [])
})
