import { readFileSync } from 'node:fs'

/**
 * What one idle connection costs, by kind of heap object: the difference between two
 * heap snapshots of the same server at two connection counts, divided by the difference
 * in connections. `--profile` writes such snapshots (`<server>-<C>-idle.heapsnapshot`).
 *
 *   npm run bench:heap-diff -- bench/results/profiles/gateway-5000-idle.heapsnapshot \
 *     bench/results/profiles/gateway-10000-idle.heapsnapshot 5000
 *
 * Prints bytes and objects per connection for every (type, name) that grew, largest
 * first. Comparing the gateway's lines with ws-naive's shows what the gateway adds:
 * that is how the per-socket listener dictionary (compactListeners in lib/transport/internals.ts) was found.
 */
interface Group { count: number, size: number }

function groups (file: string): Map<string, Group> {
  const snapshot = JSON.parse(readFileSync(file, 'utf8'))
  const meta = snapshot.snapshot.meta
  const fields: string[] = meta.node_fields
  const width = fields.length
  const typeNames: string[] = meta.node_types[0]
  const typeAt = fields.indexOf('type')
  const nameAt = fields.indexOf('name')
  const sizeAt = fields.indexOf('self_size')
  const nodes: number[] = snapshot.nodes
  const strings: string[] = snapshot.strings
  const result = new Map<string, Group>()
  for (let i = 0; i < nodes.length; i += width) {
    const type = typeNames[nodes[i + typeAt]]
    let name = strings[nodes[i + nameAt]]
    // Strings are grouped by shape (digits and letters folded), not by content.
    if (type.includes('string')) name = type === 'string' ? name.replace(/[0-9a-z]+/g, 'x').slice(0, 30) : ''
    if (type === 'number') name = ''
    const key = `${type}  ${name.slice(0, 50)}`
    const group = result.get(key) ?? { count: 0, size: 0 }
    group.count++
    group.size += nodes[i + sizeAt]
    result.set(key, group)
  }
  return result
}

const [smaller, larger, connections] = process.argv.slice(2)
const perConnection = Number(connections)
if (larger === undefined || !(perConnection > 0)) {
  console.error('usage: heap-diff <snapshot at C1> <snapshot at C2> <C2 - C1>')
  process.exit(2)
}
const before = groups(smaller)
const rows: Array<{ key: string, count: number, bytes: number }> = []
for (const [key, group] of groups(larger)) {
  const old = before.get(key) ?? { count: 0, size: 0 }
  rows.push({ key, count: (group.count - old.count) / perConnection, bytes: (group.size - old.size) / perConnection })
}
rows.sort((a, b) => b.bytes - a.bytes)
const total = rows.reduce((sum, row) => sum + row.bytes, 0)
console.log(`${total.toFixed(0)} B per connection (native TCP wrappers included)`)
console.log('bytes   objects  type  name')
for (const row of rows) {
  if (row.bytes < 2) break
  console.log(`${row.bytes.toFixed(1).padStart(6)}  ${row.count.toFixed(2).padStart(7)}  ${row.key}`)
}
