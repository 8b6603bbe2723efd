import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { type Static, Type } from '@sinclair/typebox'

const Health = Type.Object({
  status: Type.String(),
  service: Type.String(),
  timestamp: Type.String(),
  uptime: Type.Number({ description: 'seconds since the process started' })
})
const Ready = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('not_ready')]),
  checks: Type.Record(Type.String(), Type.String()),
  unavailable: Type.Optional(Type.Array(Type.String()))
})

/** Health and readiness probes (docs/protocol.md, HTTP API). */
const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/health', {
    schema: { summary: 'Service health', tags: ['health'], response: { 200: Health } }
  }, async () => ({
    status: 'ok',
    service: 'realtime-gateway',
    timestamp: new Date().toISOString(),
    uptime: process.uptime()
  }))

  app.get('/health/live', {
    logLevel: 'warn',
    schema: { summary: 'Liveness: 200 while the process serves', tags: ['health'], response: { 200: Type.Object({ status: Type.String() }) } }
  }, async () => ({ status: 'ok' }))

  const ready = async (_request: FastifyRequest, reply: FastifyReply): Promise<Static<typeof Ready>> => {
    const report = await app.readiness.report()
    if (report.ready) return { status: 'ready', checks: report.checks }
    const unavailable = Object.entries(report.checks).filter(([, s]) => s !== 'ok').map(([name]) => name)
    reply.code(503)
    return { status: 'not_ready', checks: report.checks, unavailable }
  }
  const readySchema = {
    summary: 'Readiness: 200 when every configured dependency is reachable, else 503 naming it',
    tags: ['health'],
    response: { 200: Ready, 503: Ready }
  }
  app.get('/health/ready', { logLevel: 'warn', schema: readySchema }, ready)
  app.get('/ready', { logLevel: 'warn', schema: { ...readySchema, summary: 'Readiness, as /health/ready (the path some orchestrators probe)' } }, ready)
}

export default healthRoutes
