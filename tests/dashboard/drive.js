// Drives Debian's chromium (headless) through playwright-core against a running moat
// dashboard, for tests/dashboard.rs. Prints one JSON object of what it saw; the Rust test
// makes the assertions. Configuration comes in the environment:
//   MOAT_URL (http://127.0.0.1:PORT), MOAT_TOKEN, MOAT_LOG (the log file the daemon follows),
//   MOAT_NEW_LINE (lines that make a new ban, appended while the page is open),
//   MOAT_NEW_TARGET (that ban's target), PLAYWRIGHT (path of playwright-core),
//   MOAT_ARTIFACTS (where the screenshots go), MOAT_PROFILE (an empty user-data-dir).
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require(process.env.PLAYWRIGHT);

const url = process.env.MOAT_URL;
const out = { dialogs: [], errors: [] };

async function main() {
  const context = await chromium.launchPersistentContext(process.env.MOAT_PROFILE, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 900 },
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on("dialog", d => { out.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on("pageerror", e => out.errors.push(e.message));

    // Read-only first: no token.
    await page.goto(url + "/");
    await page.waitForSelector("#bans details", { timeout: 10000 });
    out.readonly_mode = await page.textContent("#mode");
    out.readonly_unban_buttons = await page.locator("#bans button.unban").count();
    out.readonly_unban_status = await page.evaluate(async () => {
      const r = await fetch("/api/unban", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ target: "203.0.113.66" }) });
      return r.status;
    });

    // With the token: it is exchanged for a session cookie and leaves the address bar.
    await page.goto(url + "/?token=" + encodeURIComponent(process.env.MOAT_TOKEN));
    await page.waitForFunction(() => document.querySelector("#mode").textContent === "actions on", null, { timeout: 10000 });
    out.url_after_login = page.url();
    out.cookie_http_only = (await context.cookies()).some(c => c.name === "moat_session" && c.httpOnly && c.sameSite === "Strict");
    out.document_cookie = await page.evaluate(() => document.cookie);
    // A request without the CSRF header is refused even with the session.
    out.no_csrf_status = await page.evaluate(async () => {
      const r = await fetch("/api/unban", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ target: "203.0.113.66" }) });
      return r.status;
    });

    out.jails_text = await page.textContent("#jails");
    out.ban_targets = await page.$$eval("#bans details", ds => ds.map(d => d.dataset.target));
    // Open every ban: the evidence is there as text.
    for (const s of await page.locator("#bans details summary").all()) await s.click();
    out.evidence_text = await page.$$eval("pre.evidence", ps => ps.map(p => p.textContent).join("\n"));
    out.injected_elements = await page.evaluate(() =>
      document.querySelectorAll("#bans img, #bans script, #bans iframe, main img").length);
    out.scripts = await page.evaluate(() => [...document.scripts].map(s => s.src));
    out.chart_lines = await page.locator("#timeline svg polyline").count();
    out.chart_bars = await page.locator("#timeline svg rect.ban-bar").count();
    out.chart_points = await page.$eval("#timeline svg polyline", p => p.getAttribute("points").split(" ").length);
    await page.click("#span-week");
    out.week_lines = await page.locator("#timeline svg polyline").count();
    await page.click("#span-day");

    fs.mkdirSync(process.env.MOAT_ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(process.env.MOAT_ARTIFACTS, "dashboard-1280.png"), fullPage: true });

    // A new ban while the page is open: it appears without a reload.
    const target = process.env.MOAT_NEW_TARGET;
    const navigations = [];
    page.on("framenavigated", f => { if (f === page.mainFrame()) navigations.push(f.url()); });
    const t0 = Date.now();
    fs.appendFileSync(process.env.MOAT_LOG, process.env.MOAT_NEW_LINE);
    await page.waitForSelector(`#bans details[data-target="${target}"]`, { timeout: 15000 });
    out.new_ban_ms = Date.now() - t0;
    out.navigations_during_wait = navigations.length;

    // Search narrows the list.
    await page.fill("#search", "198.51.100");
    out.visible_after_search = await page.$$eval("#bans details", ds => ds.filter(d => !d.hidden).map(d => d.dataset.target));
    await page.fill("#search", "");

    // Unban it from the page.
    const ban = page.locator(`#bans details[data-target="${target}"]`);
    if (!(await ban.evaluate(d => d.open))) await ban.locator("summary").click();
    await ban.locator("button.unban").click();
    await page.waitForSelector(`#bans details[data-target="${target}"]`, { state: "detached", timeout: 10000 });
    out.unbanned = true;

    // Ban for a time from the page.
    await page.fill("#ban-target", "192.0.2.55");
    await page.fill("#ban-duration", "2h");
    await page.fill("#ban-reason", "<i>by hand</i>");
    await page.click("#ban-form button[type=submit]");
    await page.waitForSelector('#bans details[data-target="192.0.2.55/32"]', { timeout: 10000 });
    out.hand_ban_text = await page.textContent('#bans details[data-target="192.0.2.55/32"]');

    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300);
    out.narrow_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await page.screenshot({ path: path.join(process.env.MOAT_ARTIFACTS, "dashboard-390.png"), fullPage: true });
  } finally {
    await context.close();
  }
}

main().then(() => {
  process.stdout.write(JSON.stringify(out) + "\n");
}, e => {
  out.fatal = String(e && e.stack || e);
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exitCode = 1;
});
