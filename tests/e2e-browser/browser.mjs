// The cloud test runner's browser: Debian's headless Chromium driven by playwright-core (no
// browser download). run.sh runs it inside the `cloud` network namespace.
//
// Usage: node browser.mjs [--proxy http://HOST:PORT|socks5://HOST:PORT [--user U --pass P]]
//                         [--timeout MS]
//                         [--fetch PATH] [--dom SELECTOR]... [--viewport WxH]
//                         [--screenshot FILE.png] URL...
//
// Visits each URL in one browser context and prints one line per URL:
//   goto URL status=N text=FIRST-200-CHARS-OF-THE-PAGE-TEXT
//   goto URL error=WHAT-CHROMIUM-SAID
// With --fetch PATH, after the first URL loads, the page itself fetch()es PATH (same origin),
// reads the body as a stream, reporting `progress BYTES` lines as it goes, and prints
//   fetch PATH sha256=HEX bytes=N        (crypto.subtle.digest over the whole body)
//   fetch PATH error=WHAT
// With --dom SELECTOR (repeatable), after the first URL loads, for each selector:
//   dom SELECTOR text=FIRST-500-CHARS-OF-ITS-TEXT       (or `dom SELECTOR error=none`)
// With --screenshot FILE.png, the first URL's page (the viewport, --viewport, default 1000x600)
// is saved there, and `screenshot FILE.png bytes=N` printed.
// The exit status is 0 whenever the browser ran (run.sh judges the lines), 2 if it did not.

import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
const opt = { timeout: 30000, urls: [] };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--proxy') opt.proxy = args[++i];
  else if (a === '--user') opt.user = args[++i];
  else if (a === '--pass') opt.pass = args[++i];
  else if (a === '--timeout') opt.timeout = Number(args[++i]);
  else if (a === '--fetch') opt.fetch = args[++i];
  else if (a === '--dom') (opt.dom ||= []).push(args[++i]);
  else if (a === '--screenshot') opt.screenshot = args[++i];
  else if (a === '--viewport') {
    const [width, height] = args[++i].split('x').map(Number);
    opt.viewport = { width, height };
  }
  else opt.urls.push(a);
}

const oneLine = (s, n = 200) => String(s).replace(/\s+/g, ' ').trim().slice(0, n);

// A last resort so that a wedged browser never hangs the suite (run.sh also bounds us).
const guard = setTimeout(() => {
  console.log('guard error=browser.mjs ran for 150 s; giving up');
  process.exit(2);
}, 150000);

let browser;
try {
  const launch = {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    chromiumSandbox: false, // --no-sandbox: we run as root
    // playwright-core adds --headless and a fresh, empty --user-data-dir of its own.
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout: 60000,
  };
  if (opt.fetch) {
    // crypto.subtle exists only in secure contexts; the private app is plain http.
    const origin = new URL(opt.urls[0]).origin;
    launch.args.push(`--unsafely-treat-insecure-origin-as-secure=${origin}`);
  }
  if (opt.proxy) {
    // Chromium takes no credentials in --proxy-server; playwright answers the proxy's 407.
    launch.proxy = { server: opt.proxy };
    if (opt.user !== undefined) {
      launch.proxy.username = opt.user;
      launch.proxy.password = opt.pass;
    }
  }
  browser = await chromium.launch(launch);
} catch (e) {
  console.log(`launch error=${oneLine(e.message)}`);
  process.exit(2);
}

try {
  // The HTTPS app has a self-signed certificate: the point here is the tunnel, not its cert.
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: opt.viewport || { width: 1000, height: 600 },
  });
  const page = await context.newPage();
  await page.exposeFunction('reportProgress', (n) => console.log(`progress ${n}`));
  for (const [i, url] of opt.urls.entries()) {
    try {
      const resp = await page.goto(url, { timeout: opt.timeout, waitUntil: 'load' });
      const text = await page.evaluate(() => document.body ? document.body.innerText : '');
      console.log(`goto ${url} status=${resp ? resp.status() : 'none'} text=${oneLine(text)}`);
    } catch (e) {
      console.log(`goto ${url} error=${oneLine(e.message.split('\n')[0])}`);
      continue;
    }
    if (i === 0 && opt.dom) {
      for (const sel of opt.dom) {
        const t = await page.evaluate((s) => {
          const el = document.querySelector(s);
          return el ? el.innerText : null;
        }, sel);
        console.log(t === null ? `dom ${sel} error=none` : `dom ${sel} text=${oneLine(t, 500)}`);
      }
    }
    if (i === 0 && opt.screenshot) {
      const png = await page.screenshot({ path: opt.screenshot });
      console.log(`screenshot ${opt.screenshot} bytes=${png.length}`);
    }
    if (i === 0 && opt.fetch) {
      const r = await page.evaluate(async (path) => {
        try {
          const resp = await fetch(path, { cache: 'no-store' });
          if (!resp.ok) return { error: `HTTP ${resp.status}` };
          const reader = resp.body.getReader();
          const chunks = [];
          let bytes = 0;
          let reported = 0;
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            chunks.push(value);
            bytes += value.length;
            if (bytes - reported >= 1 << 20) {
              reported = bytes;
              await window.reportProgress(bytes);
            }
          }
          const all = new Uint8Array(bytes);
          let at = 0;
          for (const c of chunks) {
            all.set(c, at);
            at += c.length;
          }
          const digest = await crypto.subtle.digest('SHA-256', all);
          const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0'))
            .join('');
          return { sha: hex, bytes };
        } catch (e) {
          return { error: String(e) };
        }
      }, opt.fetch);
      if (r.error) console.log(`fetch ${opt.fetch} error=${oneLine(r.error)}`);
      else console.log(`fetch ${opt.fetch} sha256=${r.sha} bytes=${r.bytes}`);
    }
  }
} catch (e) {
  console.log(`browser error=${oneLine(e.message)}`);
} finally {
  await browser.close().catch(() => {});
  clearTimeout(guard);
}
