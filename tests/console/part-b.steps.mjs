// Steps of the console end-to-end run for the policy editor and the identities page (issue 8,
// part B). console.test.mjs calls them in order with its shared state (the signed-in page, the
// tenant, the running edge); every action goes through the UI, the API only reads facts back.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';

const READY_MS = 60_000;

// Polls `check` (an async predicate) every 200 ms until it holds, bounded by READY_MS.
async function until(what, check) {
  const deadline = Date.now() + READY_MS;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// The policy page: a typo shows sase-model's error at the field and blocks deploying; then the
// `list-orders` route's required scope changes from orders:read to orders:admin, is deployed
// from the page, reaches the edge, and a GET /orders with an orders:read token gets 403.
export async function changeScopeAndDeploy(ctx) {
  const { page, api, tenantId, edgeAddr, nav, shot, bin, issuerDir, iss } = ctx;
  const token = execFileSync(path.join(bin, 'sase-token'), ['mint', '--key', path.join(issuerDir, 'issuer.pem'),
    '--iss', iss, '--aud', 'orders-api', '--sub', 'bob', '--scope', 'orders:read', '--ttl', '3600']).toString().trim();
  const before = await fetch(`http://${edgeAddr}/orders`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(before.status, 200, 'orders:read may list orders before the change');

  await nav('Policy');
  const scopes = page.locator('#res-0-route-1-scopes');
  await scopes.waitFor({ timeout: READY_MS });
  assert.equal(await page.locator('#res-0-route-1-id').inputValue(), 'list-orders');
  assert.equal(await scopes.inputValue(), 'orders:read');

  // Validation as you type, by the model compiled into the page.
  const pathField = page.locator('#res-0-route-1-path');
  await pathField.fill('orders');
  await page.locator('#res-0-route-1-path-errors').waitFor({ timeout: READY_MS });
  assert.equal(await pathField.getAttribute('aria-invalid'), 'true');
  assert.ok(await page.locator('#deploy').isDisabled(), 'an invalid policy cannot be deployed');
  await pathField.fill('/orders');
  await page.locator('#res-0-route-1-path-errors').waitFor({ state: 'detached', timeout: READY_MS });

  await scopes.fill('orders:admin');
  await page.locator('#tab-diff').click();
  await page.locator('pre.diff .add', { hasText: 'orders:admin' }).waitFor({ timeout: READY_MS });
  await page.locator('pre.diff .del', { hasText: 'orders:read' }).first().waitFor({ timeout: READY_MS });
  await shot('policy-diff');
  await page.locator('#tab-form').click();
  await page.locator('#deploy').click();
  const notice = page.locator('#policy-notice');
  await notice.waitFor({ timeout: READY_MS });
  const m = (await notice.textContent()).match(/Deployed as version (\d+)/);
  assert.ok(m, `deploy notice: ${await notice.textContent()}`);
  const version = Number(m[1]);

  const deployed = await api('GET', `/api/tenants/${tenantId}/policy`);
  assert.equal(deployed.json.version, version);
  assert.deepEqual(deployed.json.policy.resources[0].routes[1].scopes, ['orders:admin']);
  // The edge applies it (readiness: the fleet view reports the applied version).
  await until(`the edge applying version ${version}`, async () => {
    const health = await api('GET', `/api/tenants/${tenantId}/fleet/health`);
    return health.json.some((d) => d.applied_version >= version);
  });
  const after = await fetch(`http://${edgeAddr}/orders`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(after.status, 403);
  assert.equal((await after.json()).error, 'scope_missing');
  await shot('policy');
}

// The identities page: a remote user is added, gets TOTP through "Reset MFA" (secret shown
// once), signs in as the ZTNA client would; "Revoke" then ends that session and refuses sign-in.
export async function revokeUser(ctx) {
  const { page, api, tenantId, nav, shot, totpAt, stepNow } = ctx;
  const username = 'carol';
  const password = 'carol-console-e2e-password';
  await nav('Identities');
  await page.locator('#new-user-name').fill(username);
  await page.locator('#new-user-password').fill(password);
  await page.locator('#new-user-groups').fill('staff, finance');
  await page.getByRole('button', { name: 'Add user' }).click();
  const row = page.locator(`#remote-users tr[data-user="${username}"]`);
  await row.waitFor({ timeout: READY_MS });
  await row.getByRole('button', { name: `Reset MFA of ${username}` }).click();
  const secret = (await page.locator('#totp-secret').textContent()).trim();
  assert.match(secret, /^[A-Z2-7]+=*$/);
  await row.getByText('TOTP').waitFor({ timeout: READY_MS });

  const login = (code) => fetch(`${ctx.cp}/api/ztna/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ tenant_id: tenantId, username, password, totp: code }),
  });
  const signedIn = await login(totpAt(secret, stepNow()));
  const signedInText = await signedIn.text();
  assert.equal(signedIn.status, 200, `ZTNA sign-in before revocation: ${signedInText}`);
  const session = JSON.parse(signedInText).session_id;
  assert.ok(session);

  await row.getByRole('button', { name: `Revoke ${username}` }).click();
  await page.locator('#identities-notice', { hasText: `${username} revoked` }).waitFor({ timeout: READY_MS });
  await row.locator('.state', { hasText: 'Revoked' }).waitFor({ timeout: READY_MS });

  const users = await api('GET', `/api/tenants/${tenantId}/ztna/users`);
  assert.equal(users.json.find((u) => u.username === username).disabled, true);
  const sessions = await api('GET', `/api/tenants/${tenantId}/ztna/sessions`);
  assert.equal(sessions.json.find((s) => s.id === session).revoked, true, 'the live session ended');
  const refused = await login(totpAt(secret, stepNow()));
  assert.equal(refused.status, 403);
  assert.equal((await refused.json()).error, 'user_disabled');
  await shot('identities');
}

// The incidents page: an incident opened in the UI shows its NIS2 clocks counting down (24 h,
// 72 h, and one month after the notification deadline), and marking the early warning submitted is recorded.
export async function openIncident(ctx) {
  const { page, api, tenantId, nav, shot } = ctx;
  const title = 'Credential stuffing on the orders API';
  await nav('Incidents');
  await page.locator('#incident-title').fill(title);
  await page.locator('#incident-severity').selectOption('critical');
  await page.locator('#incident-description').fill('Refused logins from many addresses (console e2e).');
  await page.getByRole('button', { name: 'Open incident' }).click();
  const card = page.locator('article.incident', { hasText: title });
  await card.waitFor({ timeout: READY_MS });
  const clock = (m) => card.locator(`tr[data-milestone="${m}"] .countdown`);
  assert.match(await clock('early_warning').textContent(), /^(23h 5\dm|1d 00h 00m) left$/);
  assert.match(await clock('notification').textContent(), /^(2d 23h 5\dm|3d 00h 00m) left$/);
  assert.match(await clock('final_report').textContent(), /^3[0-4]d \d\dh \d\dm left$/);
  await card.getByRole('button', { name: 'Mark Early warning (24 h) submitted' }).click();
  await clock('early_warning').getByText(/^submitted /).waitFor({ timeout: READY_MS });
  const list = await api('GET', `/api/tenants/${tenantId}/incidents`);
  const incident = list.json.find((i) => i.title === title);
  assert.equal(incident.severity, 'critical');
  assert.ok(incident.milestones.find((m) => m.milestone === 'early_warning').submitted_at_ms > 0);
  assert.equal(incident.milestones.find((m) => m.milestone === 'notification').submitted_at_ms, null);
  await shot('incidents');
}
