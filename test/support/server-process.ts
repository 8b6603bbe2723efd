import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

/**
 * The real server as a child process, for what only a process shows: start-up errors,
 * the dev secret, signals. It runs a private build of the current sources (not `dist/`,
 * which other work may be rebuilding), shared by the test files through a directory
 * named after the sources' hash; each process gets its own temporary cwd, so
 * `.jwt-dev-secret` never lands in the repository.
 */
const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..')
const SOURCES = ['app.ts', 'server.ts', 'lib', 'plugins', 'routes', 'scripts']

function sourceHash (): string {
  const hash = createHash('sha256')
  const visit = (path: string) => {
    if (statSync(path).isDirectory()) {
      for (const name of readdirSync(path).sort()) visit(join(path, name))
    } else if (path.endsWith('.ts')) {
      hash.update(path).update(readFileSync(path))
    }
  }
  for (const source of SOURCES) if (existsSync(join(ROOT, source))) visit(join(ROOT, source))
  return hash.digest('hex').slice(0, 16)
}

/** Builds of older sources, left by earlier runs; an hour old is safely unused. */
function removeOldBuilds (): void {
  for (const name of readdirSync(tmpdir())) {
    const path = join(tmpdir(), name)
    if (name.startsWith('rtg-server-') && Date.now() - statSync(path).mtimeMs > 3_600_000) rmSync(path, { recursive: true, force: true })
  }
}

let build: Promise<string> | undefined

/** Compiles the server once for these sources; returns the directory holding server.js. */
export function buildServer (): Promise<string> {
  build ??= (async () => {
    const target = join(tmpdir(), `rtg-server-${sourceHash()}`)
    if (existsSync(join(target, 'server.js'))) return target
    removeOldBuilds()
    const dir = mkdtempSync(join(tmpdir(), 'rtg-build-'))
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
    await new Promise<void>((resolve, reject) => {
      execFile(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', dir], { cwd: ROOT }, (err, stdout) => {
        // Type errors elsewhere in a tree being edited still emit JavaScript (exit code 2).
        if (err !== null && (err as { code?: unknown }).code !== 2) reject(new Error(`tsc failed: ${stdout}`))
        else resolve()
      })
    })
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n')
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir')
    // The dashboard's static files, so the build serves them as `npm start` does (and does not warn).
    symlinkSync(join(ROOT, 'public'), join(dir, 'public'), 'dir')
    try {
      renameSync(dir, target)
    } catch {
      // Another test file built the same sources meanwhile: use theirs.
      rmSync(dir, { recursive: true, force: true })
    }
    return target
  })()
  return build
}

export interface ServerProcess {
  child: ChildProcess
  /** Its working directory (where a development run leaves .jwt-dev-secret). */
  cwd: string
  /** Everything written so far. */
  stdout: () => string
  stderr: () => string
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>
  /** Resolves once stdout contains `text`; rejects on exit or after `timeoutMs`. */
  waitForOutput: (text: string, timeoutMs?: number) => Promise<void>
}

/** Starts `node server.js` with exactly `env` (plus PATH), killed when the test ends. */
export function spawnServer (t: Test, buildDir: string, env: Record<string, string>): ServerProcess {
  const cwd = mkdtempSync(join(tmpdir(), 'rtg-cwd-'))
  t.teardown(() => rmSync(cwd, { recursive: true, force: true }))
  const child = spawn(process.execPath, [join(buildDir, 'server.js')], {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  let err = ''
  const listeners = new Set<() => void>()
  child.stdout?.on('data', (chunk: Buffer) => { out += chunk.toString(); for (const l of listeners) l() })
  child.stderr?.on('data', (chunk: Buffer) => { err += chunk.toString() })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  let hasExited = false
  void exited.then(() => { hasExited = true; for (const l of listeners) l() })
  t.teardown(() => { if (!hasExited) child.kill('SIGKILL') })

  // A cold start loads every module; on a loaded CI machine that has taken over 15 s.
  const waitForOutput = (text: string, timeoutMs = 45_000) => new Promise<void>((resolve, reject) => {
    const check = () => {
      if (out.includes(text)) done(null)
      else if (hasExited) done(new Error(`server exited before printing ${JSON.stringify(text)}; stderr: ${err}; stdout: ${out}`))
    }
    const timer = setTimeout(() => done(new Error(`no ${JSON.stringify(text)} within ${timeoutMs} ms; stdout: ${out}`)), timeoutMs)
    const done = (e: Error | null) => {
      clearTimeout(timer)
      listeners.delete(check)
      if (e === null) resolve()
      else reject(e)
    }
    listeners.add(check)
    check()
  })
  return { child, cwd, stdout: () => out, stderr: () => err, exited, waitForOutput }
}

/** Rejects when `promise` takes longer than `ms`, so a test never hangs on a process. */
export async function within<T> (ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
