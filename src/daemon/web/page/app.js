// moat's dashboard. Everything shown is built with DOM nodes and textContent: log lines are
// attacker text and must never be parsed as HTML.
"use strict";

const csrf = document.querySelector('meta[name="moat-csrf"]').content;
const mode = document.querySelector('meta[name="moat-mode"]').content;
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
let last = null;
let span = "day";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function fill(id, ...nodes) {
  const e = document.getElementById(id);
  e.replaceChildren(...nodes);
  return e;
}

function when(t) {
  if (!t) return "forever";
  const d = new Date(t);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function ago(t) {
  const s = Math.max(0, Math.round((Date.now() - new Date(t).getTime()) / 1000));
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function left(t) {
  if (!t) return "forever";
  const s = Math.round((new Date(t).getTime() - Date.now()) / 1000);
  if (s <= 0) return "ending";
  if (s < 3600) return Math.ceil(s / 60) + " min left";
  if (s < 172800) return Math.round(s / 3600) + " h left";
  return Math.round(s / 86400) + " d left";
}

function secs(n) {
  if (n === null || n === undefined) return "forever";
  if (n % 86400 === 0) return n / 86400 + "d";
  if (n % 3600 === 0) return n / 3600 + "h";
  if (n % 60 === 0) return n / 60 + "m";
  return n + "s";
}

function table(id, head, rows) {
  const t = document.getElementById(id);
  const numeric = head.map((_, i) => rows.length > 0 && rows.every(r => typeof r[i] === "number"));
  const tr = el("tr", {}, ...head.map((h, i) => el("th", numeric[i] ? { class: "num" } : {}, h)));
  const body = rows.map(r => el("tr", {}, ...r.map(c =>
    c instanceof Node ? el("td", {}, c) : el("td", typeof c === "number" ? { class: "num" } : {}, c))));
  if (!rows.length) body.push(el("tr", {}, el("td", { colspan: head.length, class: "muted" }, "none")));
  t.replaceChildren(el("thead", {}, tr), el("tbody", {}, ...body));
}

function say(text, bad) {
  const m = fill("message", text);
  m.className = bad ? "bad" : "";
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Moat-CSRF": csrf },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(text || r.statusText);
  return text ? JSON.parse(text) : null;
}

// The timeline: one line of failures per jail, bars of bans (all jails) underneath.
function drawTimeline(tl) {
  // Drawn at the box's own width, so that labels keep their size on a phone.
  const W = Math.max(300, document.getElementById("timeline").clientWidth || 1000);
  const H = W < 640 ? 180 : 220, L = 36, B = 22, T = 8;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": "failures and bans over time" });
  const n = tl.jails.length ? tl.jails[0].failures.length : 0;
  const legend = [];
  if (!n) {
    fill("timeline", root);
    fill("legend");
    return;
  }
  const fmax = Math.max(1, ...tl.jails.flatMap(j => j.failures));
  const bans = new Array(n).fill(0);
  tl.jails.forEach(j => j.bans.forEach((b, i) => { bans[i] += b; }));
  const bmax = Math.max(1, ...bans);
  const x = i => L + (W - L - 4) * i / Math.max(1, n - 1);
  const y = v => T + (H - B - T) * (1 - v / fmax);
  root.append(svg("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }));
  root.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  const top = svg("text", { x: 2, y: T + 10 }); top.textContent = String(fmax); root.append(top);
  const zero = svg("text", { x: 2, y: H - B }); zero.textContent = "0"; root.append(zero);
  const bw = Math.max(1, (W - L) / n - 1);
  bans.forEach((b, i) => {
    if (!b) return;
    const h = (H - B - T) * 0.35 * b / bmax;
    const r = svg("rect", { x: x(i) - bw / 2, y: H - B - h, width: bw, height: h, fill: "#c62828", opacity: 0.55, class: "ban-bar" });
    const tip = svg("title"); tip.textContent = b + " ban" + (b === 1 ? "" : "s"); r.append(tip);
    root.append(r);
  });
  tl.jails.forEach((j, k) => {
    const c = COLORS[k % COLORS.length];
    const pts = j.failures.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const line = svg("polyline", { points: pts, fill: "none", stroke: c, "stroke-width": 2, class: "failures", "vector-effect": "non-scaling-stroke" });
    const tip = svg("title"); tip.textContent = j.jail + ": " + j.failures.reduce((a, b) => a + b, 0) + " failures"; line.append(tip);
    root.append(line);
    const s = el("span", {}, `${j.jail}: ${j.failures.reduce((a, b) => a + b, 0)} failures, ${j.bans.reduce((a, b) => a + b, 0)} bans`);
    s.style.setProperty("--c", c);
    legend.push(s);
  });
  const start = new Date(tl.start).getTime();
  for (const f of [0, 0.5, 1]) {
    const i = Math.round(f * (n - 1));
    const t = new Date(start + (i + 1) * tl.bucket_secs * 1000);
    const label = svg("text", { x: Math.min(Math.max(x(i) - 15, L), W - 45), y: H - 6 });
    label.textContent = span === "day" ? t.toISOString().slice(11, 16) + "Z" : t.toISOString().slice(5, 10);
    root.append(label);
  }
  const bansKey = el("span", {}, "bans (bars)");
  bansKey.style.setProperty("--c", "#c62828");
  legend.push(bansKey);
  fill("timeline", root);
  fill("legend", ...legend);
}

function evidence(lines) {
  if (!lines.length) return el("p", { class: "muted" }, "no lines kept (a ban by hand, or from before moat kept them)");
  return el("pre", { class: "evidence" }, lines.join("\n"));
}

function banNode(b, canAct) {
  const holders = b.enforcers.map(h => h.enforcer + (h.pending ? " (pending)" : "")).join(", ") || "none";
  const summary = el("summary", {},
    el("span", { class: "target" }, b.target.replace(/\/(32|128)$/, "")),
    el("span", {}, b.jail),
    el("span", { class: "meta" }, "origin " + b.origin),
    el("span", { class: "meta" }, "enforcers " + holders),
    el("span", { class: "meta" }, b.failures + " failures"),
    el("span", { class: "meta", title: when(b.started) }, "since " + ago(b.started)),
    el("span", { class: "meta", title: when(b.until) }, left(b.until)));
  const rule = b.rule
    ? `${b.rule.maxretry} failures within ${secs(b.rule.findtime_secs)} → ban for ${secs(b.rule.bantime_secs)}${b.rule.escalates ? " (escalates)" : ""} · filter ${b.rule.filter}`
    : "a ban by hand";
  const hist = el("div", { class: "history" });
  const body = el("div", { class: "body" },
    el("div", { class: "meta" }, "rule: " + rule + (b.escalation ? ` · repeat offender (level ${b.escalation})` : "")),
    b.reason ? el("div", { class: "meta" }, "reason: " + b.reason) : null,
    el("div", { class: "meta" }, `from ${when(b.started)} until ${when(b.until)}`),
    evidence(b.evidence),
    hist);
  if (canAct) {
    body.append(el("button", {
      class: "danger unban", onclick: async ev => {
        ev.preventDefault();
        try {
          await post("/api/unban", { target: b.target, jail: b.jail });
          say("unbanned " + b.target);
          refresh();
        } catch (e) { say("unban failed: " + e.message, true); }
      }
    }, "Unban"));
  }
  const d = el("details", { class: "ban" }, summary, body);
  d.dataset.target = b.target;
  d.dataset.search = [b.target, b.jail, b.origin, holders, b.reason, ...b.evidence].join("\n").toLowerCase();
  d.addEventListener("toggle", async () => {
    if (!d.open || hist.dataset.loaded) return;
    hist.dataset.loaded = "1";
    try {
      const r = await fetch("/api/ban?" + new URLSearchParams({ target: b.target, jail: b.jail }), { credentials: "same-origin" });
      if (!r.ok) return;
      const full = await r.json();
      hist.replaceChildren(full.history.length
        ? el("div", {}, el("h3", {}, "earlier bans"), el("ul", {}, ...full.history.map(h =>
          el("li", {}, `${when(h.started)} · ${h.jail} · ${h.failures} failures · ${h.end_reason || "active"}`))))
        : el("p", { class: "muted" }, "no earlier bans"));
    } catch (e) { /* the list stays as it is */ }
  });
  return d;
}

function applySearch() {
  const q = document.getElementById("search").value.trim().toLowerCase();
  for (const d of document.querySelectorAll("#bans details")) {
    d.hidden = q !== "" && !d.dataset.search.includes(q);
  }
}

function render(s) {
  last = s;
  const st = s.status;
  fill("about", `v${st.version} · pid ${st.pid} · up since ${when(st.started)}`);
  const canAct = s.can_act;
  document.getElementById("mode").textContent = canAct ? "actions on" : "read-only";
  document.getElementById("ban-form").hidden = !canAct;
  document.getElementById("logout").hidden = !canAct;
  document.getElementById("login").hidden = canAct;
  fill("warnings", ...st.warnings.map(w => el("li", {}, w)));
  drawTimeline(span === "day" ? s.day : s.week);

  const open = new Set([...document.querySelectorAll("#bans details[open]")].map(d => d.dataset.target));
  const nodes = s.bans.map(b => banNode(b, canAct));
  nodes.forEach(n => { if (open.has(n.dataset.target)) n.open = true; });
  fill("bans", ...(nodes.length ? nodes : [el("p", { class: "muted" }, "no active bans")]));
  fill("ban-count", s.active > s.bans.length ? `${s.active} (newest ${s.bans.length} listed)` : String(s.active));
  applySearch();

  table("jails", ["jail", "filter", "rule", "failing", "failed", "banned", "banned (total)", "refused"],
    st.jails.map(j => [j.name, j.filter,
      j.maxretry ? `${j.maxretry} in ${secs(j.findtime_secs)} → ${secs(j.bantime_secs)}` : "-",
      j.currently_failing, j.total_failed, j.currently_banned, j.total_banned, j.refused]));

  const top = (id, list) => fill(id, ...(list.length ? list.map(c => el("li", {}, `${c.name} — ${c.bans}`)) : [el("li", { class: "muted" }, "none")]));
  top("top-targets", s.top_targets);
  top("top-networks", s.top_networks);
  top("top-jails", s.top_jails);

  const rows = [];
  for (const src of st.sources) {
    if (!src.files.length) rows.push([src.source, "-", "-", "-", src.error || "no file yet"]);
    for (const f of src.files) {
      const quiet = f.last_line ? ago(f.last_line) : "none since start";
      const mins = f.last_line ? Math.floor((Date.now() - new Date(f.last_line).getTime()) / 60000) : null;
      rows.push([f.path, f.lines, f.lag, mins !== null && mins >= 10 ? `no lines for ${mins} minutes` : quiet,
        (src.error || "") + (f.overlong ? ` ${f.overlong} lines over 1 MiB skipped` : "")]);
    }
  }
  table("sources", ["source", "lines", "lag (bytes)", "last line", "errors"], rows);
  table("enforcers", ["enforcer", "applied", "queued", "failed", "gave up", "repairs", "detail", "last error"],
    st.enforcers.map(e => [e.name, e.applied, e.queued, e.failed, e.gave_up, e.repairs,
      [e.detail, e.remark].filter(Boolean).join(" · "),
      e.last_error ? `${e.last_error} (${when(e.last_error_at)})` : "-"]));
  fill("ledger", st.ledger);
  // The fleet, when this node is in one: Redis, this node's counts, each node's heartbeat.
  const c = st.cluster;
  for (const id of ["cluster-head", "cluster", "cluster-nodes"]) document.getElementById(id).hidden = !c;
  if (c) {
    const state = c.degraded ? `DEGRADED (${c.degraded})`
      : c.reachable ? `reachable, ${(c.latency_ms || 0).toFixed(1)} ms` : "unreachable";
    fill("cluster", `node ${c.node} on ${c.redis}: ${state} · published ${c.published}, ` +
      `received ${c.received}, refused ${c.refused}, queued ${c.queued} · in force here: ` +
      `${c.own_bans} own, ${c.remote_bans} from other nodes`);
    table("cluster-nodes", ["node", "state", "last heartbeat", "bans decided", "lag"],
      c.nodes.map(n => [n.node, n.alive ? "alive" : "SILENT", ago(n.last_heartbeat), n.bans,
        n.lag_ms === null || n.lag_ms === undefined ? "-" : `${n.lag_ms} ms`]));
  }
  table("ports", ["container", "kind", "published", "verdict"],
    s.ports.map(p => [p.name, p.kind, `${p.ip || "0.0.0.0"}:${p.published} → ${p.target}/${p.proto}`, p.verdict]));
}

let pending = null;
async function refresh() {
  if (pending) return pending;
  pending = (async () => {
    try {
      const r = await fetch("/api/state", { credentials: "same-origin" });
      if (r.status === 401) { document.getElementById("login").hidden = false; say("log in with the token from `moat web token`"); return; }
      if (!r.ok) { say(await r.text(), true); return; }
      render(await r.json());
    } catch (e) {
      say("cannot reach moat: " + e.message, true);
    } finally {
      pending = null;
    }
  })();
  return pending;
}

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => { live.textContent = "live"; live.className = "badge live"; });
  es.addEventListener("change", refresh);
  es.addEventListener("tick", refresh);
  es.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "badge down"; });
}

document.getElementById("search").addEventListener("input", applySearch);
let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => { if (last) drawTimeline(span === "day" ? last.day : last.week); }, 150);
});
for (const [id, which] of [["span-day", "day"], ["span-week", "week"]]) {
  document.getElementById(id).addEventListener("click", () => {
    span = which;
    document.getElementById("span-day").className = which === "day" ? "on" : "";
    document.getElementById("span-week").className = which === "week" ? "on" : "";
    if (last) drawTimeline(span === "day" ? last.day : last.week);
  });
}
document.getElementById("login").addEventListener("submit", async ev => {
  ev.preventDefault();
  const r = await fetch("/api/login", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: document.getElementById("token").value }),
  });
  if (r.ok) location.replace("/"); else say(await r.text(), true);
});
document.getElementById("logout").addEventListener("click", async () => {
  try { await post("/api/logout", {}); } catch (e) { /* gone anyway */ }
  location.replace("/");
});
document.getElementById("ban-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const target = document.getElementById("ban-target").value.trim();
  try {
    await post("/api/ban", {
      target,
      duration: document.getElementById("ban-duration").value.trim() || null,
      reason: document.getElementById("ban-reason").value.trim() || null,
    });
    say("banned " + target);
    refresh();
  } catch (e) { say("ban failed: " + e.message, true); }
});

// Opened as /?token=...: exchange it for a session cookie, then drop it from the address bar.
(async () => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (token) {
    history.replaceState(null, "", "/");
    const r = await fetch("/api/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
    if (r.ok) { location.replace("/"); return; }
    say("the token was refused", true);
  }
  if (mode === "login") document.getElementById("login").hidden = false;
  refresh();
  connect();
})();
