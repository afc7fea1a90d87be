// The hand-written Playwright baseline of Usher's UI benchmark (scripts/bench.sh engine,
// examples/bench_engine.rs): the same UI work as the `steps` of the playbooks'
// create_user, set_roles, deactivate_user and delete_user (playbooks/*.yaml), written the
// way an engineer scripts an admin UI with Playwright: logged in once (not timed), no
// precondition, no read-back, no screenshots. See README.md.
//
//   node ui.mjs --app classic|spa|dokuwiki --base URL --user U --password P
//               [--totp BASE32SEED] [--n 10] [--prefix pw]
//
// stdout: one JSON line per action, nothing else:
//   {"app":"classic","action":"create","n":10,"median_ms":..,"min_ms":..,"max_ms":..}
// an action the app's playbook does not have gives {"app":..,"action":..,"n":..,"skipped":"why"}.
// Diagnostics go to stderr; any failure exits non-zero.
import { createHmac, randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const USAGE =
  'usage: node ui.mjs --app classic|spa|dokuwiki --base URL --user USER --password PASS ' +
  '[--totp BASE32SEED] [--n 10] [--prefix pw]';

function fail(msg, code = 1) {
  console.error(`playwright baseline: ${msg}`);
  process.exit(code);
}

function parseArgs(argv) {
  const known = new Set(['app', 'base', 'user', 'password', 'totp', 'n', 'prefix']);
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith('--') || !known.has(k.slice(2))) fail(`unknown argument ${k}\n${USAGE}`, 2);
    if (i + 1 >= argv.length) fail(`${k} needs a value\n${USAGE}`, 2);
    out[k.slice(2)] = argv[i + 1];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const APP = args.app;
const BASE = (args.base || '').replace(/\/+$/, '');
const N = Number(args.n ?? 10);
const PREFIX = args.prefix ?? 'pw';
if (!['classic', 'spa', 'dokuwiki'].includes(APP)) fail(`--app must be classic, spa or dokuwiki\n${USAGE}`, 2);
if (!BASE || args.user === undefined || args.password === undefined) fail(USAGE, 2);
if (!Number.isInteger(N) || N < 1) fail(`--n must be a positive integer, got ${args.n}`, 2);
if (APP !== 'dokuwiki' && !args.totp) fail(`--totp is required for ${APP}`, 2);

// ------------------------------------------------------------------ TOTP (RFC 6238)
// SHA-1, 6 digits, 30-s steps; the seed in RFC 4648 base32 (case, spaces, '=' ignored).
function base32Decode(s) {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = s.toUpperCase().replace(/[\s=]/g, '');
  const out = [];
  let acc = 0;
  let bits = 0;
  for (const c of clean) {
    const v = abc.indexOf(c);
    if (v < 0) throw new Error(`TOTP seed: ${JSON.stringify(c)} is not base32`);
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >>> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

function totp(seed, now = Date.now()) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(Math.floor(now / 1000 / 30)));
  const h = createHmac('sha1', base32Decode(seed)).update(msg).digest();
  const o = h[h.length - 1] & 0x0f;
  return String((h.readUInt32BE(o) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

// The apps accept each 30-s window's code once, whoever used it (Usher may have, just
// before): after a refusal, sleep into the next window.
async function nextWindow() {
  const ms = 30_000 - (Date.now() % 30_000) + 300;
  console.error(`${APP}: verification code refused; retrying in the next TOTP window (${(ms / 1000).toFixed(1)} s)`);
  await new Promise((r) => setTimeout(r, ms));
}
const TOTP_RETRIES = 3;

// ------------------------------------------------------------------ the apps
// Each app: login(page) [not timed]; create / set_roles / deactivate / delete (page, u)
// [timed: the playbook action's `steps`]; check[action](request, u) [not timed: the
// change is stored]. u = { email, login, id }.
// Roles as bench_engine gives them: create with SCIM group Engineering, set_roles to
// Finance, through each playbook's `roles:` map.

function rx(re, text, what) {
  const m = re.exec(text);
  if (!m) throw new Error(`check: ${what} not found in the page`);
  return m[1];
}
function expectEq(got, want, what) {
  if (got !== want) throw new Error(`check: ${what} is ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
}

const classic = {
  async login(page) {
    await page.goto(`${BASE}/login`);
    await page.fill('#email', args.user);
    await page.fill('#password', args.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    // The code form, or the sign-in form again with the reason.
    await page.locator("h1:has-text('Two-factor authentication'), .alert-error").first().waitFor();
    if (!(await page.locator('#otp1').count())) {
      throw new Error(`sign-in refused: ${(await page.locator('.alert-error').first().textContent()).trim()}`);
    }
    for (let attempt = 0; ; attempt++) {
      const code = totp(args.totp);
      for (let i = 0; i < 6; i++) await page.fill(`#otp${i + 1}`, code[i]);
      // A good code redirects (to the users list); a refused one re-renders the form.
      const [resp] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/login/otp'),
        page.getByRole('button', { name: 'Verify' }).click(),
      ]);
      if (resp.status() >= 300 && resp.status() < 400) {
        await page.waitForURL(/\/admin\//);
        return;
      }
      const body = await resp.text();
      const alert = (body.match(/class="alert[^"]*alert-error[^"]*"[^>]*>([\s\S]*?)<\/div>/) || [, body.slice(0, 200)])[1]
        .replace(/<[^>]*>/g, '')
        .trim();
      if (!/invalid verification code/i.test(alert) || attempt >= TOTP_RETRIES) {
        throw new Error(`sign-in refused at the code: ${alert || page.url()}`);
      }
      await nextWindow();
    }
  },
  async create(page, u) {
    await page.goto(`${BASE}/admin/users/new`);
    await page.fill('#email', u.email);
    await page.fill('#first_name', 'Bench');
    await page.fill('#last_name', 'User');
    await page.selectOption('#role', 'Editor');
    await page.getByRole('button', { name: 'Send invite' }).click();
    await page.waitForURL(/\/admin\/users\/\d+$/);
    u.id = page.url().match(/\/admin\/users\/(\d+)$/)[1];
  },
  async set_roles(page, u) {
    await page.goto(`${BASE}/admin/users/${u.id}/edit`);
    await page.selectOption('#role', 'Billing');
    await page.getByRole('button', { name: 'Save changes' }).click();
    await page.waitForURL(/\/admin\/users\/\d+$/);
  },
  async deactivate(page, u) {
    await page.goto(`${BASE}/admin/users/${u.id}/edit`);
    await page.getByRole('button', { name: 'Deactivate user' }).click();
    // Posts to …/deactivate and redirects back to the edit page (same URL), which then
    // offers "Reactivate user".
    await page.getByRole('button', { name: 'Reactivate user' }).waitFor();
  },
  async delete(page, u) {
    await page.goto(`${BASE}/admin/users/${u.id}/edit`);
    await page.getByRole('link', { name: 'Delete user' }).click();
    await page.getByRole('button', { name: 'Yes, delete' }).click();
    await page.waitForURL(/\/admin\/users(\?.*)?$/);
  },
  async show(req, u) {
    const r = await req.get(`${BASE}/admin/users/${u.id}`);
    if (!r.ok()) throw new Error(`check: GET /admin/users/${u.id} answered ${r.status()}`);
    const html = await r.text();
    return {
      email: rx(/id="user-email">([^<]*)</, html, '#user-email'),
      role: rx(/id="user-role">([^<]*)</, html, '#user-role'),
      status: rx(/id="user-status">([\s\S]*?)<\/dd>/, html, '#user-status').replace(/<[^>]*>/g, '').trim(),
    };
  },
  check: {
    async create(req, u) {
      const s = await classic.show(req, u);
      expectEq(s.email, u.email, 'email');
      expectEq(s.role, 'Editor', 'role');
    },
    async set_roles(req, u) {
      expectEq((await classic.show(req, u)).role, 'Billing', 'role');
    },
    async deactivate(req, u) {
      expectEq((await classic.show(req, u)).status, 'Deactivated', 'status');
    },
    async delete(req, u) {
      const r = await req.get(`${BASE}/admin/users?q=${encodeURIComponent(u.email)}`);
      const html = await r.text();
      if (!r.ok() || !html.includes('id="users"')) throw new Error(`check: the user list answered ${r.status()}`);
      if (html.includes(`>${u.email}<`)) throw new Error(`check: ${u.email} is still listed after delete`);
    },
  },
};

const spa = {
  async login(page) {
    await page.goto(`${BASE}/`);
    await page.fill('#login-email', args.user);
    await page.fill('#login-password', args.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#otp-code, .alert-error:visible').first().waitFor();
    if (!(await page.locator('#otp-code').count())) {
      throw new Error(`sign-in refused: ${(await page.locator('.alert-error').first().textContent()).trim()}`);
    }
    for (let attempt = 0; ; attempt++) {
      await page.fill('#otp-code', totp(args.totp));
      const [resp] = await Promise.all([
        page.waitForResponse((r) => new URL(r.url()).pathname === '/api/login/otp'),
        page.getByRole('button', { name: 'Verify' }).click(),
      ]);
      if (resp.ok()) {
        await page.locator('#logout-button').waitFor();
        return;
      }
      if (resp.status() !== 401 || attempt >= TOTP_RETRIES) {
        throw new Error(`sign-in refused at the code: HTTP ${resp.status()} ${await resp.text()}`);
      }
      // The alert shows once the app has handled the answer; the form is usable again.
      await page.locator('.alert-error:visible').waitFor();
      await nextWindow();
    }
  },
  // Ticks exactly `wanted` of the four role boxes of form `form` (invite or edit).
  async tickRoles(page, form, wanted) {
    for (const r of ['viewer', 'editor', 'admin', 'billing']) {
      await page.setChecked(`#${form}-role-${r}`, wanted.includes(r));
    }
  },
  async open(page, u) {
    await page.goto(`${BASE}/#/users/${u.id}`);
    await page.locator(`#user-detail[data-user-id='${u.id}']`).waitFor();
  },
  // The Edit modal of the user's page: change, save, wait until the PATCH has answered
  // (the app closes the modal then).
  async edit(page, u, change) {
    await spa.open(page, u);
    await page.click('#detail-edit');
    await page.locator('#edit-form').waitFor();
    await change();
    await page.click('#edit-form button[type=submit]');
    await page.locator('#edit-form').waitFor({ state: 'detached' });
  },
  async create(page, u) {
    await page.goto(`${BASE}/#/users`);
    await page.click('#invite-button');
    await page.fill('#invite-email', u.email);
    await page.fill('#invite-given-name', 'Bench');
    await page.fill('#invite-family-name', 'User');
    await spa.tickRoles(page, 'invite', ['editor']);
    await page.getByRole('button', { name: 'Send invitation' }).click();
    await page.locator('#user-detail').waitFor();
    u.id = (await page.textContent('#detail-id')).trim();
  },
  async set_roles(page, u) {
    await spa.edit(page, u, () => spa.tickRoles(page, 'edit', ['billing']));
  },
  async deactivate(page, u) {
    await spa.edit(page, u, () => page.uncheck('#edit-active')); // a role=switch button
  },
  async delete(page, u) {
    await spa.open(page, u);
    // confirm("Delete …?") is accepted by the page's dialog handler (see main).
    await page.click('#detail-delete');
    await page.locator('#toasts .toast', { hasText: 'User deleted' }).first().waitFor();
  },
  async get(req, u) {
    const r = await req.get(`${BASE}/api/users/${encodeURIComponent(u.id)}`, { headers: { Accept: 'application/json' } });
    return r;
  },
  async user(req, u) {
    const r = await spa.get(req, u);
    if (!r.ok()) throw new Error(`check: GET /api/users/${u.id} answered ${r.status()}`);
    return r.json();
  },
  check: {
    async create(req, u) {
      const s = await spa.user(req, u);
      expectEq(s.email, u.email, 'email');
      expectEq(s.roles.join(','), 'Editor', 'roles');
    },
    async set_roles(req, u) {
      expectEq((await spa.user(req, u)).roles.join(','), 'Billing', 'roles');
    },
    async deactivate(req, u) {
      expectEq((await spa.user(req, u)).active, false, 'active');
    },
    async delete(req, u) {
      const r = await spa.get(req, u);
      expectEq(r.status(), 404, `GET /api/users/${u.id} status after delete`);
    },
  },
};

const dokuwiki = {
  manager: `${BASE}/doku.php?do=admin&page=usermanager`,
  filtered(u) {
    return `${dokuwiki.manager}&filter%5Buser%5D=${encodeURIComponent(`^${u.login}$`)}`;
  },
  async login(page) {
    await page.goto(`${BASE}/doku.php?do=login`);
    await page.fill("#dw__login input[name='u']", args.user);
    await page.fill("#dw__login input[name='p']", args.password);
    await page.click("#dw__login button[type='submit']");
    await page.locator('li.action.logout, div.error').first().waitFor();
    if (!(await page.locator('li.action.logout').count())) {
      throw new Error(`sign-in refused: ${(await page.locator('div.error').first().textContent()).trim()}`);
    }
  },
  async create(page, u) {
    await page.goto(dokuwiki.manager);
    await page.fill('#add_userid', u.login);
    await page.fill('#add_userpass', '');
    await page.fill('#add_userpass2', '');
    await page.fill('#add_username', 'Bench User');
    await page.fill('#add_usermail', u.email);
    await page.fill('#add_usergroups', 'user,engineering');
    await page.check('#add_usernotify');
    await page.click("button[name='fn[add]']");
    await page.locator('div.success', { hasText: 'User added successfully' }).waitFor();
    // (The playbook then reads back the login DokuWiki stored; a hand-written script
    // knows it already: not timed here, so the baseline is the bare form work.)
    u.id = u.login;
  },
  async set_roles(page, u) {
    await page.goto(dokuwiki.filtered(u));
    await page.click(`tr.user_info:has(input[name='delete[${u.login}]']) >> td:nth-child(2) >> a`);
    await page.locator('#modify_userid').waitFor();
    await page.fill('#modify_usergroups', 'user,finance');
    await page.fill('#modify_userpass', '');
    await page.fill('#modify_userpass2', '');
    await page.uncheck('#modify_usernotify');
    await page.click("button[name='fn[modify]']");
    await page.locator('div.success', { hasText: 'User updated successfully' }).waitFor();
  },
  // No deactivate: DokuWiki has no disabled state and playbooks/dokuwiki.yaml has no
  // deactivate_user.
  async delete(page, u) {
    await page.goto(dokuwiki.filtered(u));
    await page.check(`input[name='delete[${u.login}]']`);
    // confirm("Really delete selected item(s)?") is accepted by the page's dialog handler.
    await page.click('#usrmgr__del');
    await page.locator('div.success', { hasText: 'users deleted' }).waitFor();
  },
  // The user's row in the filtered list, as cell texts, or null.
  async row(req, u) {
    const r = await req.get(dokuwiki.filtered(u));
    const html = await r.text();
    if (!r.ok() || !html.includes('id="user__manager"')) {
      throw new Error(`check: the User Manager answered ${r.status()} without #user__manager`);
    }
    const rows = html.match(/<tr class="user_info">[\s\S]*?<\/tr>/g) || [];
    const row = rows.find((t) => t.includes(`name="delete[${u.login}]"`));
    if (!row) return null;
    return (row.match(/<td[^>]*>[\s\S]*?<\/td>/g) || []).map((td) =>
      td.replace(/<[^>]*>/g, '').replace(/\s+/g, ' ').trim(),
    );
  },
  check: {
    async create(req, u) {
      expectEq(u.id, u.login, 'stored login');
      const cells = await dokuwiki.row(req, u);
      if (!cells) throw new Error(`check: ${u.login} is not listed after create`);
      expectEq(cells[2], 'Bench User', 'real name');
      expectEq(cells[3], u.email, 'email');
      expectEq(cells[4], 'user, engineering', 'groups');
    },
    async set_roles(req, u) {
      const cells = await dokuwiki.row(req, u);
      if (!cells) throw new Error(`check: ${u.login} is not listed after set_roles`);
      expectEq(cells[4], 'user, finance', 'groups');
    },
    async delete(req, u) {
      if (await dokuwiki.row(req, u)) throw new Error(`check: ${u.login} is still listed after delete`);
    },
  },
};

const APPS = { classic, spa, dokuwiki };
const SKIPPED = { dokuwiki: { deactivate: 'no deactivate_user in playbooks/dokuwiki.yaml (DokuWiki has no disabled state)' } };

// ------------------------------------------------------------------ run
const app = APPS[APP];
const ACTIONS = ['create', 'set_roles', 'deactivate', 'delete'];
const run = randomBytes(3).toString('hex');

const r1 = (x) => Math.round(x * 10) / 10;
function summary(action, v) {
  const s = [...v].sort((a, b) => a - b);
  const mid = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { app: APP, action, n: s.length, median_ms: r1(mid), min_ms: r1(s[0]), max_ms: r1(s[s.length - 1]) };
}

let browser;
let exitCode = 0;
try {
  browser = await chromium.launch({
    executablePath: process.env.USHER_CHROME || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.setDefaultNavigationTimeout(15_000);
  // The apps' native confirm() before a delete: answer yes (the playbooks' accept_dialog).
  page.on('dialog', (d) => d.accept().catch(() => {}));

  await app.login(page);

  const times = Object.fromEntries(ACTIONS.map((a) => [a, []]));
  for (let i = 0; i < N; i++) {
    const email = `${PREFIX}-${i}-${run}@bench.example`;
    // The login playbooks/dokuwiki.yaml derives: userName's local part, lower-cased, + -> _.
    const u = { email, login: email.split('@')[0].toLowerCase().replace(/\+/g, '_').trim(), id: null };
    for (const action of ACTIONS) {
      if (!app[action]) continue;
      const t0 = performance.now();
      try {
        await app[action](page, u);
      } catch (e) {
        throw new Error(`${action} of ${email} (${i + 1}/${N}): ${e.message.split('\n')[0]}`);
      }
      times[action].push(performance.now() - t0);
      // Not timed: the change is really stored (straight HTTP with the page's cookies).
      if (app.check[action]) {
        try {
          await app.check[action](context.request, u);
        } catch (e) {
          throw new Error(`${action} of ${email} (${i + 1}/${N}) did not take: ${e.message}`);
        }
      }
    }
  }
  for (const action of ACTIONS) {
    if (app[action]) {
      console.log(JSON.stringify(summary(action, times[action])));
    } else {
      const why = SKIPPED[APP]?.[action] ?? `no ${action} for ${APP}`;
      console.log(JSON.stringify({ app: APP, action, n: 0, skipped: why }));
      console.error(`${APP}: ${action} skipped: ${why}`);
    }
  }
  console.error(`${APP}: ${N} users (${PREFIX}-*-${run}@bench.example) created, changed and deleted; every change checked`);
} catch (e) {
  console.error(`playwright baseline (${APP}): ${e.message}`);
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
}
process.exit(exitCode);
