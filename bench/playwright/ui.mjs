// The hand-written Playwright baseline of Usher's UI benchmark (scripts/bench.sh engine,
// examples/bench_engine.rs): the same UI work as the playbooks' create_user, set_roles,
// deactivate_user and delete_user `steps`, written the way an engineer scripts an admin
// page with Playwright — logged in once, no precondition, no read-back, no screenshots.
//
//   node ui.mjs --app classic|spa|dokuwiki --base URL --user U --password P
//               [--totp BASE32] [--n 5] [--prefix pw]
//
// Prints one JSON line per action on stdout:
//   {"app":"classic","action":"create","n":5,"median_ms":..,"min_ms":..,"max_ms":..}
import { createHmac, randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const APP = args.app;
const BASE = (args.base || '').replace(/\/$/, '');
const N = Number(args.n || 5);
const PREFIX = args.prefix || 'pw';
if (!['classic', 'spa', 'dokuwiki'].includes(APP) || !BASE || !args.user || !args.password) {
  console.error('usage: node ui.mjs --app classic|spa|dokuwiki --base URL --user U --password P [--totp SEED] [--n N]');
  process.exit(2);
}

// RFC 6238 (SHA-1, 6 digits, 30 s).
function base32(s) {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of s.replace(/=+$/, '').toUpperCase()) bits += abc.indexOf(c).toString(2).padStart(5, '0');
  const out = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) out.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(out);
}
function totp(seed, step = Math.floor(Date.now() / 1000 / 30)) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(step));
  const h = createHmac('sha1', base32(seed)).update(msg).digest();
  const o = h[h.length - 1] & 0xf;
  const v = (h.readUInt32BE(o) & 0x7fffffff) % 1_000_000;
  return String(v).padStart(6, '0');
}
// The apps refuse a code whose window was used before (by anyone): the next window.
async function nextWindow() {
  const ms = 30_000 - (Date.now() % 30_000) + 500;
  await new Promise((r) => setTimeout(r, ms));
}

const apps = {
  classic: {
    async login(page) {
      await page.goto(`${BASE}/login`);
      await page.fill('#email', args.user);
      await page.fill('#password', args.password);
      await Promise.all([page.waitForNavigation(), page.click("button:has-text('Sign in')")]);
      for (let attempt = 0; attempt < 3; attempt++) {
        const code = totp(args.totp);
        for (let i = 0; i < 6; i++) await page.fill(`#otp${i + 1}`, code[i]);
        await Promise.all([page.waitForNavigation(), page.click("button:has-text('Verify')")]);
        if (new URL(page.url()).pathname.startsWith('/admin')) return;
        await nextWindow();
      }
      throw new Error('classic: sign-in refused');
    },
    async create(page, u) {
      await page.goto(`${BASE}/admin/users/new`);
      await page.fill('#email', u.email);
      await page.fill('#first_name', 'Bench');
      await page.fill('#last_name', 'User');
      await page.selectOption('#role', 'Editor');
      await Promise.all([page.waitForURL(/\/admin\/users\/\d+$/), page.click("button:has-text('Send invite')")]);
      u.id = page.url().match(/\/admin\/users\/(\d+)$/)[1];
    },
    async set_roles(page, u) {
      await page.goto(`${BASE}/admin/users/${u.id}/edit`);
      await page.selectOption('#role', 'Billing');
      await Promise.all([page.waitForURL(/\/admin\/users\/\d+$/), page.click("button:has-text('Save changes')")]);
    },
    async deactivate(page, u) {
      await page.goto(`${BASE}/admin/users/${u.id}/edit`);
      await Promise.all([page.waitForNavigation(), page.click("button:has-text('Deactivate user')")]);
    },
    async delete(page, u) {
      await page.goto(`${BASE}/admin/users/${u.id}/edit`);
      await Promise.all([page.waitForNavigation(), page.click("a:has-text('Delete user')")]);
      await Promise.all([page.waitForURL(/\/admin\/users(\?.*)?$/), page.click("button:has-text('Yes, delete')")]);
    },
    async gone(page, u) {
      await page.goto(`${BASE}/admin/users?q=${encodeURIComponent(u.email)}`);
      return (await page.locator(`text="${u.email}"`).count()) === 0;
    },
  },

  spa: {
    async login(page) {
      await page.goto(`${BASE}/`);
      await page.fill('#login-email', args.user);
      await page.fill('#login-password', args.password);
      await page.click("button:has-text('Sign in')");
      await page.waitForSelector('#otp-code');
      for (let attempt = 0; attempt < 3; attempt++) {
        await page.fill('#otp-code', totp(args.totp));
        await page.click("button:has-text('Verify')");
        const shown = await page.waitForSelector('#logout-button, .alert-error:visible');
        if ((await shown.getAttribute('id')) === 'logout-button') return;
        await nextWindow();
      }
      throw new Error('spa: sign-in refused');
    },
    async roles(page, form, wanted) {
      for (const r of ['viewer', 'editor', 'admin', 'billing']) {
        await page.setChecked(`#${form}-role-${r}`, wanted.includes(r));
      }
    },
    async open(page, u) {
      await page.goto(`${BASE}/#/users/${u.id}`);
      await page.waitForSelector(`#user-detail[data-user-id='${u.id}']`);
    },
    async edit(page, u, change) {
      await this.open(page, u);
      await page.click('#detail-edit');
      await page.waitForSelector('#edit-form');
      await change();
      await page.click('#edit-form button[type=submit]');
      await page.waitForSelector('#edit-form', { state: 'detached' });
    },
    async create(page, u) {
      await page.goto(`${BASE}/#/users`);
      await page.click('#invite-button');
      await page.fill('#invite-email', u.email);
      await page.fill('#invite-given-name', 'Bench');
      await page.fill('#invite-family-name', 'User');
      await this.roles(page, 'invite', ['editor']);
      await page.click("button:has-text('Send invitation')");
      await page.waitForSelector('#user-detail');
      u.id = (await page.textContent('#detail-id')).trim();
    },
    async set_roles(page, u) {
      await this.edit(page, u, () => this.roles(page, 'edit', ['billing']));
    },
    async deactivate(page, u) {
      await this.edit(page, u, async () => {
        if ((await page.getAttribute('#edit-active', 'aria-checked')) === 'true') await page.click('#edit-active');
      });
    },
    async delete(page, u) {
      await this.open(page, u);
      page.once('dialog', (d) => d.accept());
      await page.click('#detail-delete');
      await page.locator('#toasts', { hasText: 'User deleted' }).waitFor();
    },
    async gone(page, u) {
      await page.goto(`${BASE}/?fresh#/users/${u.id}`);
      await page.getByText('User not found.').waitFor();
      return true;
    },
  },

  dokuwiki: {
    manager: `${BASE}/doku.php?do=admin&page=usermanager`,
    filtered(u) {
      return `${this.manager}&filter%5Buser%5D=${encodeURIComponent(`^${u.login}$`)}`;
    },
    async login(page) {
      await page.goto(`${BASE}/doku.php?do=login`);
      await page.fill("#dw__login input[name='u']", args.user);
      await page.fill("#dw__login input[name='p']", args.password);
      await Promise.all([page.waitForNavigation(), page.click("#dw__login button[type='submit']")]);
      await page.waitForSelector('li.action.logout');
    },
    async create(page, u) {
      await page.goto(this.manager);
      await page.fill('#add_userid', u.login);
      await page.fill('#add_username', 'Bench User');
      await page.fill('#add_usermail', u.email);
      await page.fill('#add_usergroups', 'user,engineering');
      await page.check('#add_usernotify');
      await Promise.all([page.waitForNavigation(), page.click("button[name='fn[add]']")]);
      await page.locator('div.success', { hasText: 'User added successfully' }).waitFor();
    },
    async set_roles(page, u) {
      await page.goto(this.filtered(u));
      await Promise.all([
        page.waitForNavigation(),
        page.click(`tr.user_info:has(input[name='delete[${u.login}]']) >> td:nth-child(2) >> a`),
      ]);
      await page.fill('#modify_usergroups', 'user,finance');
      await page.uncheck('#modify_usernotify');
      await Promise.all([page.waitForNavigation(), page.click("button[name='fn[modify]']")]);
      await page.locator('div.success', { hasText: 'User updated successfully' }).waitFor();
    },
    async delete(page, u) {
      await page.goto(this.filtered(u));
      await page.check(`input[name='delete[${u.login}]']`);
      page.once('dialog', (d) => d.accept());
      await Promise.all([page.waitForNavigation(), page.click('#usrmgr__del')]);
      await page.locator('div.success', { hasText: 'users deleted' }).waitFor();
    },
    async gone(page, u) {
      await page.goto(this.filtered(u));
      return (await page.locator(`input[name='delete[${u.login}]']`).count()) === 0;
    },
  },
};

const app = apps[APP];
const actions = ['create', 'set_roles', 'deactivate', 'delete'].filter((a) => app[a]);
const browser = await chromium.launch({
  executablePath: process.env.USHER_CHROME || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  await app.login(page);
  const times = Object.fromEntries(actions.map((a) => [a, []]));
  const run = Date.now().toString(36) + randomBytes(2).toString('hex');
  const users = [];
  for (let i = 0; i < N; i++) {
    const email = `${PREFIX}-${run}-${i}@bench.example`;
    const u = { email, login: email.split('@')[0].toLowerCase().replace(/\+/g, '_') };
    users.push(u);
    for (const a of actions) {
      const t0 = performance.now();
      await app[a](page, u);
      times[a].push(performance.now() - t0);
    }
  }
  // Outside the timed part: the work really happened.
  for (const u of users) {
    if (!(await app.gone(page, u))) throw new Error(`${APP}: ${u.email} is still there after delete`);
  }
  for (const a of actions) {
    const v = [...times[a]].sort((x, y) => x - y);
    const mid = v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    const r = (x) => Math.round(x * 10) / 10;
    console.log(JSON.stringify({ app: APP, action: a, n: N, median_ms: r(mid), min_ms: r(v[0]), max_ms: r(v[v.length - 1]) }));
  }
  if (!app.deactivate) console.error(`${APP}: no deactivate (the app has no disabled state)`);
} catch (e) {
  console.error(`playwright baseline (${APP}): ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
