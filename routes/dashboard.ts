import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'

/** The browser client's entry: its modules are served from /client/. */
const CLIENT_ENTRY = "export * from './client/realtime-client.js'\n"

/**
 * The page may talk to its own origin only (HTTP and WebSocket); event payloads are
 * rendered as text, and this keeps injected markup from running even if one slipped by.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'", "connect-src 'self' ws: wss:", "img-src 'self' data:",
  "style-src 'self'", "script-src 'self'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'self'"
].join('; ')

/**
 * The admin dashboard at GET / (public/) and the browser client at GET /client.js
 * (built from client/ into dist/client by `npm run build`). Files are listed once at
 * start-up (no catch-all route), so unknown paths keep the API's 404.
 */
const dashboardRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const root = projectRoot()
  await app.register(fastifyStatic, {
    root: join(root, 'public'),
    prefix: '/',
    wildcard: false,
    setHeaders: (res) => {
      res.setHeader('content-security-policy', CONTENT_SECURITY_POLICY)
      // The pages take `?token=` (then drop it from the address bar): no Referer may repeat it.
      res.setHeader('referrer-policy', 'no-referrer')
    }
  })

  // What the dashboard cannot learn from events alone: the threshold its low-stock panel
  // applies to every stock figure (admin:alert names it only when a product crosses it).
  app.get('/dashboard/settings', { schema: { hide: true } }, async () => ({ lowStockThreshold: app.config.LOW_STOCK_THRESHOLD }))

  const clientDir = join(root, 'dist', 'client')
  if (!existsSync(join(clientDir, 'realtime-client.js'))) {
    app.log.warn('the browser client is not built (npm run build): /client.js and the dashboard will not work')
    return
  }
  await app.register(fastifyStatic, { root: clientDir, prefix: '/client/', wildcard: false, decorateReply: false })
  app.get('/client.js', { schema: { hide: true } }, async (_request, reply) =>
    await reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(CLIENT_ENTRY))
}

export default dashboardRoutes

/** The directory holding package.json: this file runs from routes/ (tests) or dist/routes/. */
function projectRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error('dashboard: package.json not found above ' + fileURLToPath(import.meta.url))
    dir = parent
  }
  return dir
}
