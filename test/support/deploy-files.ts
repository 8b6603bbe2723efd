import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'

/**
 * Readers for the packaging files (docker-compose.yml, .env.example, nginx.conf,
 * Dockerfile) shared by the packaging tests: no Docker engine runs here, so these files
 * are checked as text and as parsed structures.
 */

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8')

export type Service = Record<string, any>
export interface Compose { services: Record<string, Service>, volumes?: Record<string, unknown> }

/** docker-compose.yml with YAML merge keys (`<<: *gateway`) applied, as Compose does. */
export const loadCompose = (): Compose => parse(read('docker-compose.yml'), { merge: true }) as Compose

/** The keys of `depends_on`, in its list or map form. */
export function dependsOn (service: Service): string[] {
  const d = service.depends_on
  if (d === undefined) return []
  return Array.isArray(d) ? d : Object.keys(d)
}

/** `environment` in its map or `KEY=value` list form. */
export function environment (service: Service): Record<string, string> {
  const env = service.environment ?? {}
  if (!Array.isArray(env)) return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? '' : String(v)]))
  return Object.fromEntries(env.map((line: string) => {
    const i = line.indexOf('=')
    return i < 0 ? [line, ''] : [line.slice(0, i), line.slice(i + 1)]
  }))
}

export const VARIABLE_REF = /\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}/g

/** Compose interpolation of `${VAR}`, `${VAR:-default}`, `${VAR:?error}` from `vars`; `$$` is a literal `$`. */
export function interpolate (text: string, vars: Record<string, string>): string {
  return text.replaceAll('$$', '\u0000').replace(VARIABLE_REF, (_m, name: string, op?: string, arg?: string) => {
    const value = vars[name]
    const empty = value === undefined || (op?.startsWith(':') === true && value === '')
    if (!empty) return value
    if (op?.endsWith('-') === true) return arg ?? ''
    if (op?.endsWith('?') === true) throw new Error(`${name}: ${arg}`)
    return ''
  }).replaceAll('\u0000', '$')
}

export interface EnvLine { name: string, value: string, active: boolean }

/** `.env.example`: `NAME=value` lines, active or commented out (`# NAME=default`). */
export function parseEnvExample (text: string): EnvLine[] {
  const lines: EnvLine[] = []
  for (const line of text.split('\n')) {
    const m = /^(#\s?)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line)
    if (m !== null) lines.push({ name: m[2], value: m[3], active: m[1] === undefined })
  }
  return lines
}

/** One nginx directive: its words and, for a block, its children. */
export interface NginxDirective { name: string, args: string[], block?: NginxDirective[] }

/** A small nginx.conf parser (comments, quotes, blocks): enough to check our own config. */
export function parseNginx (text: string): NginxDirective[] {
  const tokens: string[] = []
  const re = /#[^\n]*|'([^']*)'|"([^"]*)"|([{};])|([^\s{};'"#]+)/g
  for (const m of text.matchAll(re)) {
    if (m[0].startsWith('#')) continue
    tokens.push(m[1] ?? m[2] ?? m[3] ?? m[4])
  }
  let i = 0
  const parseBlock = (): NginxDirective[] => {
    const out: NginxDirective[] = []
    let words: string[] = []
    while (i < tokens.length) {
      const token = tokens[i++]
      if (token === ';') { out.push({ name: words[0], args: words.slice(1) }); words = [] } else if (token === '{') {
        out.push({ name: words[0], args: words.slice(1), block: parseBlock() })
        words = []
      } else if (token === '}') return out
      else words.push(token)
    }
    return out
  }
  return parseBlock()
}

export const find = (block: NginxDirective[] | undefined, name: string): NginxDirective[] =>
  (block ?? []).filter((d) => d.name === name)

/** nginx time (`3600s`, `1h`, `90`) in seconds. */
export function nginxSeconds (value: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(value)
  if (m === null) throw new Error(`not an nginx time: ${value}`)
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd' ?? 's'] ?? 1
  return Number(m[1]) * unit
}

export interface DockerInstruction { keyword: string, args: string }
export interface DockerStage { from: string, name?: string, instructions: DockerInstruction[] }

/** Dockerfile stages with their instructions (continuation lines joined, comments dropped). */
export function parseDockerfile (text: string): { args: Record<string, string>, stages: DockerStage[] } {
  const logical: string[] = []
  let current = ''
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue
    if (raw.endsWith('\\')) { current += raw.slice(0, -1) + ' '; continue }
    current += raw
    if (current.trim() !== '') logical.push(current.trim())
    current = ''
  }
  const args: Record<string, string> = {}
  const stages: DockerStage[] = []
  for (const line of logical) {
    const [, keyword, rest] = /^(\w+)\s+([\s\S]*)$/.exec(line) ?? []
    if (keyword === undefined) continue
    const kw = keyword.toUpperCase()
    if (kw === 'FROM') {
      const m = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?/i.exec(rest)
      const image = (m?.[1] ?? '').replace(/\$\{?(\w+)\}?/g, (_s, name: string) => args[name] ?? '')
      stages.push({ from: image, name: m?.[2], instructions: [] })
    } else if (stages.length === 0 && kw === 'ARG') {
      const [name, value = ''] = rest.split('=')
      args[name.trim()] = value.trim()
    } else if (stages.length > 0) {
      stages[stages.length - 1].instructions.push({ keyword: kw, args: rest })
    }
  }
  return { args, stages }
}

/** Whether a command-line tool runs here (`nginx -v`, `promtool --version`). */
export function toolRuns (command: string, args: string[]): boolean {
  const result = spawnSync(command, args, { stdio: 'ignore', timeout: 10_000 })
  return result.error === undefined && result.status === 0
}

/** Whether something accepts TCP connections at host:port within a second (Redis, Kafka). */
export async function portOpen (host: string, port: number): Promise<boolean> {
  const { connect } = await import('node:net')
  return await new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 1000 })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('timeout', () => { socket.destroy(); resolve(false) })
    socket.once('error', () => resolve(false))
  })
}

/** Deletes every Redis key under `prefix` (never FLUSHALL: the Redis is shared). */
export async function deleteRedisPrefix (url: string, prefix: string): Promise<void> {
  const { Redis } = await import('ioredis')
  const redis = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true })
  redis.on('error', () => {})
  try {
    await redis.connect()
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, 'COUNT', 500)
      if (keys.length > 0) await redis.del(...keys)
      cursor = next
    } while (cursor !== '0')
  } finally {
    redis.disconnect()
  }
}
