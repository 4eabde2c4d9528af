// The web console end to end, in Debian's chromium driven by npm playwright-core (no browser
// download), against the real control plane, a real enrolled sase-edge and the sample app that
// tests/console/run.sh started. Every step goes through the UI; the API is used only for what
// the console does not do yet (the first policy, the TOTP enrolment of the test admin) and to
// read back facts. Screenshots of every page go to docs/screenshots/<page>.png.
//
// Run through tests/console/run.sh (it sets the CONSOLE_E2E_* variables).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import * as partB from './part-b.steps.mjs';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run tests/console/run.sh`);
  return value;
}
const CP = env('CONSOLE_E2E_CP');
const CA = env('CONSOLE_E2E_CA');
const BIN = env('CONSOLE_E2E_BIN');
const WORK = env('CONSOLE_E2E_WORK');
const PASSWORD = env('CONSOLE_E2E_ADMIN_PASSWORD');
const APP = env('CONSOLE_E2E_APP');
const SHOTS = env('CONSOLE_E2E_SHOTS');
const ISSUER_DIR = env('CONSOLE_E2E_ISSUER');
const ISS = 'https://idp.console-e2e.local';

// Playwright's waits: long enough for a loaded two-core machine, bounded.
const READY_MS = 60_000;

// ---- TOTP (RFC 6238, SHA-1, 6 digits, 30 s), to sign in as an authenticator app would ----
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text.replace(/=+$/, '').toUpperCase()) {
    const i = alphabet.indexOf(c);
    if (i < 0) throw new Error(`not base32: ${c}`);
    value = (value << 5) | i;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}
function totpAt(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(code).padStart(6, '0');
}
const stepNow = () => Math.floor(Date.now() / 30_000);

// ---- API calls (bearer session of the same admin; the browser uses its own cookie session) ----
let bearer = '';
async function api(method, urlPath, body) {
  const res = await fetch(CP + urlPath, {
    method,
    headers: {
      ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  return { status: res.status, json };
}

// ---- shared state across the ordered tests ----
let browser;
let page;
let totpSecret = '';
let lastStep = 0;
let claimCode = '';
let tenantId = '';
let edge = null;
let edgeAddr = '';
let reference = '';
const problems = []; // page errors, CSP violations, failed console messages

const TENANT = 'Acme Retail';
const SITE = 'Lyon store';
const EDGE_NAME = 'lyon-edge-1';

async function shot(name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}
// What part B's steps (part-b.steps.mjs: policy editor, identities) need from this run.
function partBContext() {
  return { page, api, tenantId, edgeAddr, nav, shot, totpAt, stepNow, cp: CP, bin: BIN, issuerDir: ISSUER_DIR, iss: ISS };
}
async function nav(label, heading) {
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: label, exact: true }).click();
  await page.getByRole('heading', { level: 1, name: heading ?? label }).waitFor({ timeout: READY_MS });
}

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  // The test admin enrols TOTP (the API session used for it stays valid: confirming MFA ends
  // only the admin's other sessions).
  const login = await api('POST', '/api/login', { username: 'admin', password: PASSWORD });
  assert.equal(login.status, 200, `API sign-in: ${JSON.stringify(login.json)}`);
  bearer = login.json.session;
  const enrol = await api('POST', '/api/me/mfa');
  assert.equal(enrol.status, 201, `MFA enrolment: ${JSON.stringify(enrol.json)}`);
  totpSecret = enrol.json.secret;
  lastStep = stepNow();
  const confirm = await api('POST', '/api/me/mfa/confirm', { code: totpAt(totpSecret, lastStep) });
  assert.equal(confirm.status, 204, `MFA confirmation: ${JSON.stringify(confirm.json)}`);

  // A fresh profile directory per run (Playwright's persistent context owns --user-data-dir).
  const profile = fs.mkdtempSync(path.join(WORK, 'chromium-'));
  // The control plane's certificate comes from its own CA (fetch above trusts it through
  // NODE_EXTRA_CA_CERTS; the browser is told to accept it).
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    ignoreHTTPSErrors: true,
    acceptDownloads: true,
    viewport: { width: 1440, height: 900 },
  });
  page = browser.pages()[0] ?? await browser.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    if (/Content Security Policy|Refused to/i.test(text)) problems.push(`CSP: ${text}`);
    else if (m.type() === 'error' && !/status of (401|403|404|409|422)/.test(text)) problems.push(`console error: ${text}`);
  });
});

after(async () => {
  if (edge) edge.kill('SIGTERM');
  if (browser) await browser.close();
});

test('sign in with password and TOTP', async () => {
  await page.goto(`${CP}/devices`);
  await page.getByLabel('User name').waitFor({ timeout: READY_MS });
  await shot('sign-in');
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password').fill(PASSWORD);
  // Without the code: refused, and the page says what is missing.
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'authenticator code' }).waitFor({ timeout: READY_MS });
  // With a wrong code: refused.
  await page.getByLabel(/Authenticator code/).fill(totpAt(totpSecret, lastStep + 5));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'not valid' }).waitFor({ timeout: READY_MS });
  // With the current code (never the step the enrolment used).
  const step = Math.max(lastStep + 1, stepNow());
  lastStep = step;
  await page.getByLabel(/Authenticator code/).fill(totpAt(totpSecret, step));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('.topbar .who-name', { hasText: 'admin' }).waitFor({ timeout: READY_MS });
  // The deep link asked for is where the console lands.
  await page.getByRole('heading', { level: 1, name: 'Devices' }).waitFor({ timeout: READY_MS });
  assert.match(page.url(), /\/devices$/);
});

test('tenant tree: add a customer tenant and a site', async () => {
  await nav('Tenants');
  await page.getByLabel('New customer tenant').fill(TENANT);
  await page.getByRole('button', { name: 'Add customer' }).click();
  await page.locator('.tree summary', { hasText: TENANT }).waitFor({ timeout: READY_MS });
  await page.getByLabel(`New site in ${TENANT}`).fill(SITE);
  await page.getByRole('button', { name: 'Add site' }).click();
  await page.locator('.tree li', { hasText: SITE }).first().waitFor({ timeout: READY_MS });
  // A duplicate name is refused with the API's message, not a crash.
  await page.getByLabel(`New site in ${TENANT}`).fill(SITE);
  await page.getByRole('button', { name: 'Add site' }).click();
  await page.getByRole('alert').filter({ hasText: 'exists' }).waitFor({ timeout: READY_MS });
  // The new (only) tenant is the one selected in the top bar.
  const selected = await page.locator('#tenant-switcher option:checked').textContent();
  assert.equal(selected.trim(), TENANT);
  const tenants = await api('GET', '/api/tenants');
  tenantId = tenants.json.find((t) => t.name === TENANT).id;
  assert.ok(tenantId);
  await shot('tenants');
});

test('devices: create a claim code in the UI', async () => {
  await nav('Devices');
  await page.getByText('No device yet').waitFor({ timeout: READY_MS });
  await page.getByLabel('Site').selectOption({ label: SITE });
  await page.getByRole('button', { name: 'Create claim code' }).click();
  const code = page.locator('#claim-code');
  await code.waitFor({ timeout: READY_MS });
  claimCode = (await code.textContent()).trim();
  assert.match(claimCode, /^[A-Z0-9-]{8,}$/);
  await page.locator('#claim-codes').getByText('Unused').waitFor({ timeout: READY_MS });
});

test('a real sase-edge enrolls with that code and comes online on the devices page', async () => {
  // The first policy (the policy editor is part B's page): the sample app behind the edge,
  // reading orders needs orders:read, creating one orders:write.
  const jwks = JSON.parse(fs.readFileSync(path.join(ISSUER_DIR, 'jwks.json'), 'utf8'));
  const policy = {
    issuers: [{ id: 'idp', issuer: ISS, audiences: ['orders-api'], algorithms: ['EdDSA'], keys: { jwks } }],
    resources: [{
      name: 'orders', upstream: APP, issuers: ['idp'],
      routes: [
        { id: 'health', methods: ['GET'], path: '/health', public: true },
        { id: 'list-orders', methods: ['GET'], path: '/orders', scopes: ['orders:read'] },
        { id: 'create-order', methods: ['POST'], path: '/orders', scopes: ['orders:write'] },
      ],
    }],
  };
  const put = await api('PUT', `/api/tenants/${tenantId}/policy`, policy);
  assert.equal(put.status, 200, `policy: ${JSON.stringify(put.json)}`);

  execFileSync(path.join(BIN, 'sase-edge'), ['enroll', '--control-plane', CP, '--claim', claimCode,
    '--ca-cert', CA, '--data-dir', path.join(WORK, 'edge'), '--name', EDGE_NAME], { stdio: 'pipe' });
  const log = fs.openSync(path.join(WORK, 'edge.log'), 'a');
  edge = spawn(path.join(BIN, 'sase-edge'), ['run', '--data-dir', path.join(WORK, 'edge'),
    '--http-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0'],
  { stdio: ['ignore', log, log], env: { ...process.env, RUST_LOG: 'info' } });
  fs.writeFileSync(path.join(WORK, 'edge.pid'), String(edge.pid));
  // Readiness: the edge says where it listens once running.
  const deadline = Date.now() + READY_MS;
  while (!edgeAddr) {
    const text = fs.readFileSync(path.join(WORK, 'edge.log'), 'utf8');
    const line = text.split('\n').find((l) => l.includes('sase-edge running'));
    const m = line && line.match(/http:\/\/(127\.0\.0\.1:\d+)/);
    if (m) edgeAddr = m[1];
    else if (edge.exitCode !== null) throw new Error(`the edge exited: ${text.slice(-2000)}`);
    else if (Date.now() > deadline) throw new Error('the edge did not start');
    else await new Promise((r) => setTimeout(r, 100));
  }
  // The devices page refreshes by itself: the device shows up, then online with the bundle.
  const row = page.locator('#devices tbody tr', { hasText: EDGE_NAME });
  await row.locator('.state', { hasText: 'Online' }).waitFor({ timeout: READY_MS });
  await row.getByText(`v${put.json.version} / v${put.json.version}`).waitFor({ timeout: READY_MS });
  await page.locator('#claim-codes').getByText('Used').waitFor({ timeout: READY_MS });
  await shot('devices');
});

test('change a route\'s required scope and deploy it from the policy page', async () => {
  await partB.changeScopeAndDeploy(partBContext());
});

test('a request refused by the edge (403) is found in the audit explorer by its reference id', async () => {
  const token = execFileSync(path.join(BIN, 'sase-token'), ['mint', '--key', path.join(ISSUER_DIR, 'issuer.pem'),
    '--iss', ISS, '--aud', 'orders-api', '--sub', 'alice', '--scope', 'orders:read', '--ttl', '3600']).toString().trim();
  const res = await fetch(`http://${edgeAddr}/orders`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 403);
  const body = await res.json();
  assert.equal(body.error, 'scope_missing');
  reference = body.reference;
  assert.ok(reference);

  await nav('Audit');
  await page.getByLabel('Reference id').fill(reference);
  await page.getByLabel('Reference id').press('Tab');
  // The edge ships its audit events in batches: the live tail re-runs the query until it is in.
  await page.getByLabel('Live tail').check();
  await page.getByRole('button', { name: 'Search' }).click();
  const row = page.locator(`#audit-events tr[data-reference="${reference}"]`);
  await row.waitFor({ timeout: READY_MS });
  await page.getByLabel('Live tail').uncheck();
  assert.match(await row.textContent(), /deny/);
  assert.match(await row.textContent(), /scope_missing/);
  assert.match(await row.textContent(), /POST \/orders/);
  await row.getByRole('button').click();
  const detail = page.locator('#event-detail');
  await detail.getByText(reference).waitFor({ timeout: READY_MS });
  await detail.getByText('chain intact').waitFor({ timeout: READY_MS });
  assert.match(await detail.textContent(), /alice/);
  await shot('audit');
});

test('the audit export downloads the tenant\'s JSON lines with that event', async () => {
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: READY_MS }),
    page.getByRole('button', { name: 'Export (JSON lines)' }).click(),
  ]);
  const file = path.join(WORK, 'export.jsonl');
  await download.saveAs(file);
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
  assert.ok(lines.length > 1);
  for (const line of lines) JSON.parse(line);
  assert.ok(lines.some((l) => l.includes(reference)), 'the export holds the refused request');
  await page.getByText(/Exported \d+ lines/).waitFor({ timeout: READY_MS });
});

test('revoke a user from the identities page', async () => {
  await partB.revokeUser(partBContext());
});

test('open an incident and follow its NIS2 deadlines on the incidents page', async () => {
  await partB.openIncident(partBContext());
});

test('decommission the device from the devices page', async () => {
  await nav('Devices');
  const row = page.locator('#devices tbody tr', { hasText: EDGE_NAME });
  await row.getByRole('button', { name: `Decommission ${EDGE_NAME}` }).click();
  await page.getByLabel(/Reason/).fill('store closed (console e2e)');
  await page.getByRole('dialog').getByRole('button', { name: 'Decommission', exact: true }).click();
  await row.locator('.state', { hasText: 'Decommissioned' }).waitFor({ timeout: READY_MS });
  const health = await api('GET', `/api/tenants/${tenantId}/fleet/health`);
  assert.equal(health.json.find((d) => d.name === EDGE_NAME).state, 'decommissioned');
});

test('every page renders (screenshots), unknown paths get the not-found page, no CSP violation', async () => {
  // Policy and identities were shot by their steps.
  for (const [label, file] of [['Incidents', 'incidents'], ['Charts', 'charts']]) {
    await nav(label);
    await shot(file);
  }
  await page.goto(`${CP}/no-such-page`);
  await page.getByRole('heading', { level: 1, name: 'No such page' }).waitFor({ timeout: READY_MS });
  // Keyboard: the skip link is the first stop and moves focus to the page.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
  assert.deepEqual(problems, []);
});
