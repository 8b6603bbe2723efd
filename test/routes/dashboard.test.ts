import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import type { Server } from 'node:http'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { chromium, type Page } from 'playwright-core'
import { type Test, test } from 'tap'
import { adminToken, post, requireService, serviceToken, startServer } from '../support/helper.js'

/**
 * The admin dashboard in a real headless Chromium against a real gateway: events go in
 * over HTTP and must show up on the page; then the WebSocket path is cut and held shut
 * while events are published, and the page must come back and show them.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const ROOT = join(import.meta.dirname, '..', '..')
const ARTIFACTS = join(ROOT, 'test', 'artifacts')
const WAIT_MS = 10_000

/** The page loads /client.js from dist/client: build it from the current source. */
async function buildClient (): Promise<void> {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  await promisify(execFile)(process.execPath, [tsc, '-p', join(ROOT, 'client', 'tsconfig.json')], { timeout: 120_000 })
}

/**
 * Holds WebSocket upgrades while shut (the handshake just waits, as behind a restarting
 * proxy), then hands them to the gateway: the outage lasts exactly as long as the test says.
 */
function upgradeGate (server: Server) {
  const listeners = server.listeners('upgrade') as Array<(...args: unknown[]) => void>
  server.removeAllListeners('upgrade')
  let shut = false
  const held: Array<() => void> = []
  server.on('upgrade', (...args: unknown[]) => {
    const pass = () => { for (const listener of listeners) listener.apply(server, args) }
    if (!shut) return pass()
    ;(args[1] as NodeJS.EventEmitter).on('error', () => { /* the browser may give up meanwhile */ })
    held.push(pass)
  })
  return {
    shut: () => { shut = true },
    open: () => {
      shut = false
      for (const pass of held.splice(0)) pass()
    }
  }
}

async function send (url: string, route: string, body: object): Promise<void> {
  const res = await post(`${url}${route}`, serviceToken(), body)
  if (res.status !== 202) throw new Error(`${route}: ${res.status} ${JSON.stringify(res.body)}`)
}

const text = async (page: Page, selector: string) => (await page.locator(selector).first().textContent())?.trim()

async function waitForText (page: Page, selector: string, expected: RegExp): Promise<void> {
  await page.waitForFunction(({ selector, source }) => {
    const el = document.querySelector(selector)
    return el !== null && new RegExp(source).test(el.textContent ?? '')
  }, { selector, source: expected.source }, { timeout: WAIT_MS })
}

/** A fresh headless Chromium (its own profile directory), closed when the test ends. */
async function openBrowser (t: Test): Promise<Page> {
  const userDataDir = mkdtempSync(join(tmpdir(), 'rtg-chromium-'))
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(async () => {
    await context.close()
    rmSync(userDataDir, { recursive: true, force: true })
  })
  return context.pages()[0] ?? await context.newPage()
}

test('the admin dashboard in headless Chromium: live figures, alerts, log, and a resume after the WebSocket path dies', async (t) => {
  if (!requireService(t, `Chromium at ${CHROMIUM} (apt-get install chromium)`, existsSync(CHROMIUM))) return
  await buildClient()
  const { app, url } = await startServer(t, { LOW_STOCK_THRESHOLD: 5 })
  const gate = upgradeGate(app.server)

  const page = await openBrowser(t)
  const pageErrors: string[] = []
  page.on('pageerror', (err) => pageErrors.push(err.message))
  page.on('console', (msg) => { if (msg.type() === 'error') pageErrors.push(msg.text()) })
  // The page's own requests (its CSS and scripts, fetched while ?token= is still in the
  // address bar) must not carry the token in their Referer: proxies log that header.
  const referers: string[] = []
  page.on('request', (request) => { const referer = request.headers().referer; if (referer !== undefined) referers.push(referer) })

  await page.goto(`${url}/?token=${adminToken()}`)
  await page.locator('#status[data-state="open"]').waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '#status-text'), /Live · WebSocket/)
  t.notMatch(page.url(), /token=/, 'the token left the address bar')
  t.same(referers.filter((r) => r.includes('token')), [], `no Referer carries the token (${referers.length} with one)`)
  t.ok(await page.evaluate(() => localStorage.getItem('realtime-gateway.admin-token')), 'the token is kept in localStorage')
  await waitForText(page, '#kpi-connections', /^1$/)
  await waitForText(page, '#kpi-users', /^1$/)

  // Orders (created over the HTTP broadcast route, status changes over /broadcast/order).
  await send(url, '/realtime/broadcast', { channels: ['admin', 'orders'], type: 'admin:order:created', payload: { orderId: 'o-1', userId: 'u1', total: 40, currency: 'USD' } })
  await send(url, '/realtime/broadcast/order', { userId: 'u1', orderId: 'o-1', status: 'paid', previousStatus: 'created', total: 40, currency: 'USD' })
  await send(url, '/realtime/broadcast/order', { userId: 'u2', orderId: 'o-2', status: 'paid', total: 25.5, currency: 'USD' })
  await send(url, '/realtime/broadcast', { channels: ['admin', 'orders'], type: 'admin:order:cancelled', payload: { orderId: 'o-3', userId: 'u3', total: 10, reason: 'customer request' } })
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-9', sku: 'MUG-1', productName: 'Blue mug', stock: 3, previousStock: 8 })
  await send(url, '/realtime/test/notification', { userId: 'admin-1', title: 'Hello admin', message: 'Toast me' })

  await waitForText(page, '#kpi-orders', /^3$/)
  t.match(await text(page, '#kpi-revenue'), /65\.50/, 'revenue counts the paid orders only')
  t.equal(await text(page, '#orders-by-status [data-status="paid"] .bar-count'), '2')
  t.equal(await text(page, '#orders-by-status [data-status="cancelled"] .bar-count'), '1')
  await page.locator('#alerts [data-product-id="p-9"]').waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '#alerts [data-product-id="p-9"]'), /Blue mug.*3 left/s, 'the low-stock alert')
  t.equal(await text(page, '#alerts-count'), '1')
  await page.locator('.toast', { hasText: 'Toast me' }).waitFor({ timeout: WAIT_MS })
  t.equal(await page.locator('#log [data-type="admin:order:created"]').count(), 1, 'an order event shows once, though it reached admin and orders')
  t.equal(await page.locator('#log [data-type="admin:order:updated"]').count(), 2)
  t.equal(await page.locator('#log [data-type="admin:alert"]').count(), 1)
  t.equal(await page.locator('#log [data-type="admin:inventory:updated"]').count(), 1)

  await page.selectOption('#log-filter', 'alert')
  t.equal(await page.locator('#log .log-row').count(), 1, 'the category filter')
  await page.selectOption('#log-filter', 'all')
  await page.fill('#log-search', 'o-2')
  t.equal(await page.locator('#log .log-row').count(), 1, 'the text filter')
  await page.fill('#log-search', '')

  // Cut the WebSocket path and keep it shut while events are published.
  gate.shut()
  app.hub.closeAll(1012, 'server restarting')
  await page.locator('#status[data-state="reconnecting"]').waitFor({ timeout: WAIT_MS })
  await send(url, '/realtime/broadcast/order', { userId: 'u4', orderId: 'o-4', status: 'shipped', previousStatus: 'paid', total: 30, currency: 'USD' })
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-9', sku: 'MUG-1', productName: 'Blue mug', stock: 40, previousStock: 3 })
  t.equal(await text(page, '#kpi-orders'), '3', 'nothing arrives while the path is shut')
  gate.open()

  await page.locator('#status[data-state="open"]').waitFor({ timeout: WAIT_MS })
  await waitForText(page, '#kpi-orders', /^4$/)
  t.match(await text(page, '#kpi-revenue'), /95\.50/)
  await page.locator('#log [data-type="admin:order:updated"]', { hasText: 'o-4' }).waitFor({ timeout: WAIT_MS })
  await page.locator('#alerts [data-product-id="p-9"][data-resolved="true"]').waitFor({ timeout: WAIT_MS })
  await page.locator('.toast', { hasText: 'Reconnected' }).waitFor({ timeout: WAIT_MS })
  t.ok(await page.locator('#banner').isHidden(), 'no "events missed" banner: everything was replayed')
  t.equal(await page.locator('#log [data-type="admin:order:created"]').count(), 1, 'no event was shown twice after the resume')
  t.equal(await page.locator('#log [data-type="admin:order:updated"]').count(), 3)

  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true })
  t.same(pageErrors, [], 'no errors in the page')
})

test('the dashboard asks for a token when it has none, and shows a refused one', async (t) => {
  if (!requireService(t, `Chromium at ${CHROMIUM} (apt-get install chromium)`, existsSync(CHROMIUM))) return
  const { url } = await startServer(t)
  const page = await openBrowser(t)

  await page.goto(`${url}/`)
  await page.locator('#token-gate').waitFor({ state: 'visible', timeout: WAIT_MS })
  t.ok(await page.locator('#dashboard').isHidden())

  await page.fill('#token-input', 'not-a-jwt')
  await page.click('#token-form button[type="submit"]')
  await page.locator('#token-error').waitFor({ state: 'visible', timeout: WAIT_MS })
  t.match(await text(page, '#token-error'), /refused/)
})

test('a dashboard session ended by a disconnect says so, with the reason', async (t) => {
  // Audit: the status only said "Disconnected", with no reason and no notice.
  if (!requireService(t, `Chromium at ${CHROMIUM} (apt-get install chromium)`, existsSync(CHROMIUM))) return
  await buildClient()
  const { url } = await startServer(t)
  const page = await openBrowser(t)
  await page.goto(`${url}/?token=${adminToken('ops-9')}`)
  await page.locator('#status[data-state="open"]').waitFor({ timeout: WAIT_MS })
  const res = await post(`${url}/realtime/disconnect`, serviceToken(), { userId: 'ops-9', reason: 'shift ended' })
  t.equal(res.status, 202)
  await page.locator('.toast', { hasText: 'Disconnected by the gateway' }).waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '.toast:has-text("Disconnected by the gateway")'), /shift ended/)
  await page.locator('#status[data-state="closed"]').waitFor({ timeout: WAIT_MS })
  t.equal(await text(page, '#status-text'), 'Disconnected: shift ended', 'the status keeps the reason')
})

test('behind a proxy that refuses WebSocket upgrades, the dashboard runs on SSE', async (t) => {
  if (!requireService(t, `Chromium at ${CHROMIUM} (apt-get install chromium)`, existsSync(CHROMIUM))) return
  const { app, url } = await startServer(t)
  app.server.removeAllListeners('upgrade')
  app.server.on('upgrade', (_request, socket) => { socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n') })
  const page = await openBrowser(t)
  const pageErrors: string[] = []
  page.on('pageerror', (err) => pageErrors.push(err.message))

  await page.goto(`${url}/?token=${adminToken()}`)
  await page.locator('#status[data-state="open"]').waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '#status-text'), /Live · SSE/)
  await waitForText(page, '#kpi-connections-sub', /0 WebSocket · 1 SSE/)
  await send(url, '/realtime/broadcast/order', { userId: 'u1', orderId: 'o-9', status: 'paid', total: 12, currency: 'USD' })
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-1', productName: 'Desk lamp', stock: 1, previousStock: 9 })
  await waitForText(page, '#kpi-orders', /^1$/)
  await page.locator('#alerts [data-product-id="p-1"]').waitFor({ timeout: WAIT_MS })
  t.equal(await page.locator('#log [data-type="admin:order:updated"]').count(), 1, 'events arrive once over SSE as well')
  t.same(pageErrors.filter((m) => !/WebSocket/.test(m)), [], 'no errors in the page but the refused upgrade')
})

test('the low-stock panel lists every product at or below the threshold, alerted or not', async (t) => {
  if (!requireService(t, `Chromium at ${CHROMIUM} (apt-get install chromium)`, existsSync(CHROMIUM))) return
  await buildClient()
  const { url } = await startServer(t, { LOW_STOCK_THRESHOLD: 10 })
  // Before the page opens: one product sits at 0 (its alert, if any, is long gone), one is fine.
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-0', sku: 'LMP-DSK', productName: 'Desk lamp', stock: 0, previousStock: 0 })
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-5', productName: 'Tote bag', stock: 20 })

  const page = await openBrowser(t)
  const pageErrors: string[] = []
  page.on('pageerror', (err) => pageErrors.push(err.message))
  await page.goto(`${url}/?token=${adminToken()}`)
  await page.locator('#status[data-state="open"]').waitFor({ timeout: WAIT_MS })
  await page.locator('#alerts [data-product-id="p-0"]').waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '#alerts [data-product-id="p-0"]'), /Desk lamp.*out of stock.*threshold 10/s, 'from the inventory history, with the gateway\'s threshold')
  t.equal(await text(page, '#alerts-count'), '1')
  t.ok(await page.locator('#alerts-empty').isHidden(), 'no "No product at or below its threshold" while one is')

  // Live: stock that stays low raises no admin:alert (it did not cross), yet it is listed.
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-8', productName: 'Gel pens', stock: 8, previousStock: 9 })
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-5', productName: 'Tote bag', stock: 19, previousStock: 20 })
  await page.locator('#alerts [data-product-id="p-8"]').waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '#alerts [data-product-id="p-8"]'), /Gel pens.*8 left/s)
  t.equal(await page.locator('#log [data-type="admin:alert"]').count(), 0, 'no alert fired for either')
  t.equal(await page.locator('#alerts [data-product-id="p-5"]').count(), 0, 'a product above the threshold is not listed')
  await waitForText(page, '#alerts-count', /^2$/)
  t.same(await page.locator('#alerts .alert').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.productId)), ['p-0', 'p-8'], 'lowest stock first')

  await send(url, '/realtime/broadcast/inventory', { productId: 'p-0', productName: 'Desk lamp', stock: 40, previousStock: 0 })
  await page.locator('#alerts [data-product-id="p-0"][data-resolved="true"]').waitFor({ timeout: WAIT_MS })
  await waitForText(page, '#alerts-count', /^1$/)
  t.same(pageErrors, [], 'no errors in the page')
})
