import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

/**
 * lib/ is laid out along the data path (docs/architecture.md): each folder may import only
 * from itself and the folders below it, and nothing in lib/ imports Fastify (plugins wire
 * lib/, routes speak HTTP). This test is the gate that keeps it so.
 */
const LAYERS = ['core', 'auth', 'broker', 'hub', 'transport', 'ingress', 'ops'] as const
const LIB = join(dirname(fileURLToPath(import.meta.url)), '..', 'lib')

function sources (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    return entry.isDirectory() ? sources(path) : entry.name.endsWith('.ts') ? [path] : []
  })
}

const imports = (file: string): string[] =>
  [...readFileSync(file, 'utf8').matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)].map((m) => m[1])

t.test('every lib/ file sits in one of the layers', async (t) => {
  for (const file of sources(LIB)) {
    const layer = relative(LIB, file).split('/')[0]
    t.ok((LAYERS as readonly string[]).includes(layer), `${relative(LIB, file)} is in a known layer`)
  }
})

t.test('imports only go down the layers, and never to Fastify', async (t) => {
  const upward: string[] = []
  const fastify: string[] = []
  for (const file of sources(LIB)) {
    const from = LAYERS.indexOf(relative(LIB, file).split('/')[0] as typeof LAYERS[number])
    for (const spec of imports(file)) {
      if (/^(fastify|@fastify\/|fastify-)/.test(spec)) fastify.push(`${relative(LIB, file)} -> ${spec}`)
      if (!spec.startsWith('.')) continue
      const target = relative(LIB, normalize(join(dirname(file), spec)))
      const to = LAYERS.indexOf(target.split('/')[0] as typeof LAYERS[number])
      if (target.startsWith('..') || to > from) upward.push(`${relative(LIB, file)} -> ${target}`)
    }
  }
  t.same(upward, [], 'no import reaches a higher layer (or out of lib/)')
  t.same(fastify, [], 'no Fastify import in lib/')
})

t.test('docs/architecture.md describes the tree: every lib/ folder and file, and nothing that is gone', async (t) => {
  const doc = readFileSync(join(LIB, '..', 'docs', 'architecture.md'), 'utf8')
  const rows = new Map<string, string>()
  for (const m of doc.matchAll(/^\| `lib\/(\w+)\/` \|(.*)$/gm)) rows.set(m[1], m[2])
  t.same([...rows.keys()].sort(), [...LAYERS].sort(), 'one row per layer')
  const undescribed: string[] = []
  for (const file of sources(LIB)) {
    const [layer, name] = relative(LIB, file).split('/')
    if (!(rows.get(layer) ?? '').includes(`\`${name}\``)) undescribed.push(relative(LIB, file))
  }
  t.same(undescribed, [], 'every lib/ file is named in its folder\'s row')
  const files = new Set(sources(LIB).map((file) => relative(LIB, file)))
  const gone: string[] = []
  for (const [layer, row] of rows) {
    for (const m of row.matchAll(/`([\w.-]+\.ts)`/g)) if (!files.has(`${layer}/${m[1]}`)) gone.push(`${layer}/${m[1]}`)
  }
  for (const m of doc.matchAll(/`?lib\/([\w/.-]+\.ts)/g)) if (!files.has(m[1])) gone.push(m[1])
  t.same(gone, [], 'every lib/ file the document names exists')
})
