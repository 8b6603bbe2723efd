import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { chromium, type Page } from 'playwright-core'
import { type Test, test } from 'tap'
import { watch } from '../support/client-watch.js'
import { post, requireService, serviceToken, startServer, token } from '../support/helper.js'

/**
 * The storefront demo page (public/shop.html) in a real headless Chromium against a real
 * gateway: the product's state from `rewind: 1`, the live viewer count, the shopper's own
 * order notices, the connection indicator, and the end of a disconnected session.
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

async function send (url: string, route: string, body: object): Promise<void> {
  const res = await post(`${url}${route}`, serviceToken(), body)
  if (res.status !== 202) throw new Error(`${route}: ${res.status} ${JSON.stringify(res.body)}`)
}

const text = async (page: Page, selector: string) => (await page.locator(selector).first().textContent())?.trim()

async function openBrowser (t: Test): Promise<Page> {
  const userDataDir = mkdtempSync(join(tmpdir(), 'rtg-chromium-'))
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 820 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(async () => {
    await context.close()
    rmSync(userDataDir, { recursive: true, force: true })
  })
  return context.pages()[0] ?? await context.newPage()
}

test('the storefront in headless Chromium: stock and price from rewind, viewers, order notices, disconnect', async (t) => {
  if (!requireService(t, `Chromium at ${CHROMIUM} (apt-get install chromium)`, existsSync(CHROMIUM))) return
  await buildClient()
  const { url } = await startServer(t, { PRESENCE_INTERVAL_MS: 100 })

  // The product's history before the page opens: its latest event is what the page shows.
  await send(url, '/realtime/broadcast', {
    channels: ['products', 'product:p-1'],
    type: 'product:updated',
    payload: { productId: 'p-1', sku: 'LMP-DSK', name: 'Desk lamp', price: 41, currency: 'USD', stock: 18 }
  })
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-1', sku: 'LMP-DSK', productName: 'Desk lamp', stock: 3, previousStock: 18, price: 39, currency: 'USD' })
  await send(url, '/realtime/broadcast', {
    channels: ['products', 'product:p-2'],
    type: 'product:updated',
    payload: { productId: 'p-2', name: 'Blue ceramic mug', price: 14, currency: 'USD', stock: 9 }
  })
  await send(url, '/realtime/broadcast/order', { userId: 'u-7', orderId: 'o-0', status: 'shipped', previousStatus: 'paid', total: 14, currency: 'USD' })

  const page = await openBrowser(t)
  const pageErrors: string[] = []
  page.on('pageerror', (err) => pageErrors.push(err.message))
  page.on('console', (msg) => { if (msg.type() === 'error') pageErrors.push(msg.text()) })

  await page.goto(`${url}/shop.html?product=p-1&token=${token('u-7')}`)
  await page.locator('#status[data-state="open"]').waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '#status-text'), /Live · WebSocket/, 'the connection indicator')
  t.notMatch(page.url(), /token=/, 'the token left the address bar')
  await page.locator('#price[data-price="39"]').waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '#price'), /\$39\.00/, 'the price of the latest event (rewind: 1)')
  t.equal(await page.locator('#stock').getAttribute('data-stock'), '3')
  t.match(await text(page, '#stock'), /Only 3 left/)
  t.equal(await text(page, '#product-name'), 'Desk lamp')
  await page.locator('#more a', { hasText: 'Blue ceramic mug' }).waitFor({ timeout: WAIT_MS })
  await page.locator('#orders [data-order-id="o-0"][data-status="shipped"]').waitFor({ timeout: WAIT_MS })
  t.equal(await page.locator('.toast', { hasText: 'o-0' }).count(), 0, 'an order from before the visit is listed (history), with no notice')

  // Viewers: the page itself, then two more shoppers over WebSocket and SSE.
  await page.locator('#viewers[data-count="1"]').waitFor({ timeout: WAIT_MS })
  watch(t, { url, token: token('u-8'), channels: ['product:p-1'], transports: ['ws'] })
  const sseViewer = watch(t, { url, token: token('u-9'), channels: ['product:p-1'], transports: ['sse'] })
  await page.locator('#viewers[data-count="3"]').waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '#viewers'), /3 people are looking at this/)
  sseViewer.client.close()
  await page.locator('#viewers[data-count="2"]').waitFor({ timeout: WAIT_MS })

  // Live stock, and the shopper's own order.
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-1', productName: 'Desk lamp', stock: 0, previousStock: 3, price: 39, currency: 'USD' })
  await page.locator('#stock[data-level="out"]').waitFor({ timeout: WAIT_MS })
  t.ok(await page.locator('#add-to-cart').isDisabled(), 'out of stock: no add to cart')
  await send(url, '/realtime/broadcast/order', { userId: 'u-7', orderId: 'o-1', status: 'paid', previousStatus: 'created', total: 39, currency: 'USD' })
  await send(url, '/realtime/broadcast/order', { userId: 'u-8', orderId: 'o-2', status: 'paid', total: 14, currency: 'USD' })
  await page.locator('#orders [data-order-id="o-1"][data-status="paid"]').waitFor({ timeout: WAIT_MS })
  await page.locator('.toast', { hasText: 'Order o-1: Payment received' }).waitFor({ timeout: WAIT_MS })
  t.same(await page.locator('#orders .order').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.orderId)), ['o-1', 'o-0'], 'only the shopper\'s own orders, newest first')

  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, 'storefront.png') })

  // Disconnected by the shop (4003): the page's fixed token is not used again.
  await send(url, '/realtime/disconnect', { userId: 'u-7', reason: 'logged out' })
  await page.locator('#status[data-state="closed"]').waitFor({ timeout: WAIT_MS })
  await page.locator('.toast', { hasText: 'Signed out' }).waitFor({ timeout: WAIT_MS })
  t.same(pageErrors, [], 'no errors in the page')
})

test('the storefront with a ?product= that is no channel name says so, and stays live for the shopper', async (t) => {
  // Audit: the page waited for ever, with no word of why nothing came.
  if (!requireService(t, `Chromium at ${CHROMIUM} (apt-get install chromium)`, existsSync(CHROMIUM))) return
  await buildClient()
  const { url } = await startServer(t)
  const page = await openBrowser(t)
  await page.goto(`${url}/shop.html?product=${encodeURIComponent('lamp 1/blue')}&token=${token('u-8')}`)
  await page.locator('.toast', { hasText: 'This product cannot be followed' }).waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '.toast'), /not a channel name/)
  await page.locator('#status[data-state="open"]').waitFor({ timeout: WAIT_MS })
  await send(url, '/realtime/broadcast/order', { userId: 'u-8', orderId: 'o-8', status: 'paid', previousStatus: 'created' })
  await page.locator('.toast', { hasText: 'Order o-8' }).waitFor({ timeout: WAIT_MS })
})

test('the storefront whose latest product event carries part of its state fills the rest in from history', async (t) => {
  // Audit: a stock-only inventory update then a price-only product update left the page on
  // "Checking stock…" (rewind: 1 gave it the price alone) until the next inventory event.
  if (!requireService(t, `Chromium at ${CHROMIUM} (apt-get install chromium)`, existsSync(CHROMIUM))) return
  await buildClient()
  const { url } = await startServer(t)
  await send(url, '/realtime/broadcast/inventory', { productId: 'p-3', productName: 'Wool scarf', stock: 4, previousStock: 5 })
  await send(url, '/realtime/broadcast', { channels: ['product:p-3'], type: 'product:updated', payload: { productId: 'p-3', price: 19.5, currency: 'USD' } })
  const page = await openBrowser(t)
  const pageErrors: string[] = []
  page.on('pageerror', (err) => pageErrors.push(err.message))
  await page.goto(`${url}/shop.html?product=p-3&token=${token('u-10')}`)
  await page.locator('#price[data-price="19.5"]').waitFor({ timeout: WAIT_MS })
  await page.locator('#stock[data-stock="4"]').waitFor({ timeout: WAIT_MS })
  t.match(await text(page, '#stock'), /Only 4 left/, 'the stock of the event before the latest')
  t.equal(await page.locator('.toast', { hasText: 'Price' }).count(), 0, 'no price notice for the state the page opened on')
  t.same(pageErrors, [])
})
