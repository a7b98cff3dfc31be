// The pointsman dashboard: asks for a key, reads /dashboard/api/summary, draws it. No build step.
"use strict";

const KEY_ITEM = "pointsman.dashboard.key";
const PALETTE = ["#2f6fde", "#1f9d61", "#d98a00", "#8e44ad", "#d4452f", "#16a2b8", "#7f8c8d", "#c2185b", "#5d8c2a", "#34495e"];
const charts = {};
let timer = null;

// -- formatting (pointsman report uses the same rules) ---------------------------------------

const fmt = {
  int: (v) => (v == null ? "–" : Number(v).toLocaleString("en-US")),
  money(v) {
    if (v == null) return "–";
    const a = Math.abs(v);
    const digits = a === 0 || a >= 0.1 ? 2 : a >= 0.001 ? 4 : 6;
    return (v < 0 ? "-$" : "$") + a.toFixed(digits);
  },
  pct: (v) => (v == null ? "–" : (v * 100).toFixed(1) + "%"),
  ms: (v) => (v == null ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(1)),
  time(ts, withDate) {
    const d = new Date(ts * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return withDate ? `${d.getMonth() + 1}/${d.getDate()} ${clock.slice(0, 5)}` : clock;
  },
};

// A DOM node; text children are always text (record values are never parsed as HTML).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText))]));
}

const colours = new Map();
function colour(name) {
  if (!colours.has(name)) colours.set(name, PALETTE[colours.size % PALETTE.length]);
  return colours.get(name);
}

// -- key and loading --------------------------------------------------------------------------

function showLogin(message) {
  stopAuto();
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.body.dataset.state = "login";
  document.getElementById("key").focus();
}

async function load() {
  const key = sessionStorage.getItem(KEY_ITEM);
  if (!key) return showLogin();
  const since = document.getElementById("since").value;
  const status = document.getElementById("status");
  let response;
  try {
    response = await fetch(`/dashboard/api/summary?since=${encodeURIComponent(since)}`, {
      headers: { authorization: `Bearer ${key}` },
      cache: "no-store",
    });
  } catch (error) {
    status.textContent = `Could not reach pointsman: ${error.message}`;
    status.className = "status error";
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY_ITEM);
    return showLogin((body.error && body.error.message) || `refused (${response.status})`);
  }
  if (!response.ok) {
    status.textContent = (body.error && body.error.message) || `pointsman answered ${response.status}`;
    status.className = "status error";
    return;
  }
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  render(body);
  status.className = "status";
  status.textContent = `${fmt.int(body.totals.requests)} requests since ${new Date(body.since * 1000).toLocaleString("en-GB")}` +
    ` · updated ${new Date(body.generated_at * 1000).toLocaleTimeString("en-GB")}`;
  document.body.dataset.state = "ready";
}

function stopAuto() {
  if (timer) clearInterval(timer);
  timer = null;
  document.getElementById("auto").checked = false;
}

// -- rendering --------------------------------------------------------------------------------

function render(s) {
  renderKpis(s);
  renderTraffic(s);
  renderCost(s);
  renderDeployments(s);
  renderTiers(s);
  renderLatency(s);
  renderBudgets(s);
  renderFairness(document.getElementById("fair-language"), s.fairness.by_language, s, "language");
  renderFairness(document.getElementById("fair-key"), s.fairness.by_key, s, "key");
  renderRecent(s);
}

function kpi(id, value, sub) {
  const node = document.getElementById(id);
  node.querySelector(".value").textContent = value;
  node.querySelector(".sub").textContent = sub || "";
}

function renderKpis(s) {
  const t = s.totals;
  kpi("kpi-requests", fmt.int(t.requests), `${fmt.int(t.answered)} answered · ${fmt.int(t.prompt_tokens + t.completion_tokens)} tokens`);
  kpi("kpi-cost", fmt.money(t.cost), t.baseline_cost == null ? "no prices configured" : `${fmt.money(t.baseline_cost)} if all went to ${s.premium}`);
  kpi("kpi-saving", t.saving == null ? "–" : fmt.money(t.saving), t.saving_rate == null ? "" : `${fmt.pct(t.saving_rate)} less than always ${s.premium}`);
  kpi("kpi-errors", fmt.pct(t.error_rate), `${fmt.int(t.errors)} of ${fmt.int(t.requests)} requests`);
  kpi("kpi-fallbacks", fmt.pct(t.fallback_rate), `${fmt.int(t.fallbacks)} answered after a failover`);
  const l = s.latency.total;
  const seconds = (l.p99 || 0) >= 1000;
  const short = (v) => (v == null ? "–" : seconds ? (v / 1000).toFixed(2) : fmt.ms(v));
  kpi("kpi-latency", `${short(l.p50)} / ${short(l.p99)} ${seconds ? "s" : "ms"}`, `router overhead p50 ${fmt.ms(s.latency.overhead.p50)} ms`);
}

function chart(id, config) {
  if (typeof Chart === "undefined") return;
  if (charts[id]) charts[id].destroy();
  config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
  charts[id] = new Chart(document.getElementById(id), config);
}

function labels(series) {
  const span = series.t.length ? series.t[series.t.length - 1] - series.t[0] : 0;
  return series.t.map((t) => fmt.time(t, span >= 86400));
}

function renderTraffic(s) {
  const x = s.series;
  chart("chart-traffic", {
    type: "bar",
    data: {
      labels: labels(x),
      datasets: [
        { label: "answered", data: x.requests.map((n, i) => n - x.errors[i]), backgroundColor: "#2f6fde", stack: "r", maxBarThickness: 48 },
        { label: "errors", data: x.errors, backgroundColor: "#d4452f", stack: "r", maxBarThickness: 48 },
        { label: "fallbacks", data: x.fallbacks, type: "line", borderColor: "#d98a00", backgroundColor: "#d98a00", pointRadius: 2 },
      ],
    },
    options: {
      scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      plugins: { legend: { position: "bottom" }, tooltip: { mode: "index", intersect: false } },
    },
  });
}

// Running totals at each bucket's end, starting from zero at the first bucket's start.
function cumulative(values) {
  let sum = 0;
  return [0, ...values.map((v) => (sum += v))];
}

function renderCost(s) {
  const x = s.series;
  document.getElementById("cost-caption").textContent = s.premium ? `cumulative, against sending every request to ${s.premium}` : "cumulative";
  const datasets = [{ label: "cost", data: cumulative(x.cost), borderColor: "#1f9d61", backgroundColor: "rgba(31,157,97,0.15)", fill: "origin", pointRadius: 2 }];
  if (s.premium) {
    datasets.push({ label: `always ${s.premium}`, data: cumulative(x.baseline), borderColor: "#7f8c8d", borderDash: [5, 4], fill: false, pointRadius: 2 });
  }
  chart("chart-cost", {
    type: "line",
    data: { labels: labels({ t: [...x.t, (x.t[x.t.length - 1] || 0) + x.bucket_s] }), datasets },
    options: {
      scales: { x: { ticks: { maxTicksLimit: 12 } }, y: { beginAtZero: true, ticks: { callback: (v) => "$" + Number(v.toPrecision(3)) } } },
      plugins: {
        legend: { position: "bottom" },
        tooltip: { mode: "index", intersect: false, callbacks: { label: (c) => `${c.dataset.label}: ${fmt.money(c.parsed.y)}` } },
      },
    },
  });
}

function renderDeployments(s) {
  const served = s.deployments.filter((d) => d.requests > 0);
  chart("chart-deployments", {
    type: "doughnut",
    data: {
      labels: served.map((d) => d.name),
      datasets: [{ data: served.map((d) => d.requests), backgroundColor: served.map((d) => colour(d.name)) }],
    },
    options: { plugins: { legend: { position: "right" } } },
  });
  const rows = s.deployments.map((d) =>
    el("tr", { "data-deployment": d.name },
      el("td", { class: "name" }, el("span", { class: "swatch", style: { background: colour(d.name) } }), d.name),
      el("td", { class: "n requests" }, fmt.int(d.requests)),
      el("td", { class: "n share" }, fmt.pct(d.share)),
      el("td", { class: "n failed" }, fmt.int(d.failed_attempts)),
      el("td", { class: "n cost" }, fmt.money(d.cost)),
      el("td", { class: "n p50" }, fmt.ms(d.latency_p50_ms))));
  fill(document.querySelector("#deployments tbody"), rows, 6, "no traffic in this window");
}

function renderTiers(s) {
  chart("chart-tiers", {
    type: "bar",
    data: {
      labels: s.tiers.map((t) => t.name),
      datasets: [{ label: "requests", data: s.tiers.map((t) => t.requests), backgroundColor: s.tiers.map((_, i) => PALETTE[(i + 3) % PALETTE.length]) }],
    },
    options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  const rows = s.tiers.map((t) =>
    el("tr", { "data-tier": t.name },
      el("td", { class: "name" }, t.name),
      el("td", { class: "n requests" }, fmt.int(t.requests)),
      el("td", { class: "n share" }, fmt.pct(t.share)),
      el("td", { class: "n cost" }, fmt.money(t.cost))));
  fill(document.querySelector("#tiers tbody"), rows, 4, "no routed requests in this window");
}

function renderLatency(s) {
  const names = { total: "total", first_token: "first token", upstream: "upstream", overhead: "router overhead" };
  const rows = Object.entries(names).map(([key, label]) => {
    const l = s.latency[key];
    return el("tr", { "data-latency": key },
      el("td", {}, label),
      el("td", { class: "n p50" }, fmt.ms(l.p50)),
      el("td", { class: "n p90" }, fmt.ms(l.p90)),
      el("td", { class: "n p99" }, fmt.ms(l.p99)),
      el("td", { class: "n count" }, fmt.int(l.count)));
  });
  fill(document.querySelector("#latency tbody"), rows, 5, "");
  const t = s.totals;
  const statuses = Object.entries(s.errors_by_status).map(([code, n]) => `${code} × ${n}`).join(", ") || "none";
  const facts = [
    ["error rate", fmt.pct(t.error_rate), "error-rate"],
    ["errors by status", statuses, "errors-by-status"],
    ["fallback rate", fmt.pct(t.fallback_rate), "fallback-rate"],
    ["answered after failover", fmt.int(t.fallbacks), "fallbacks"],
  ];
  const c = s.cache;
  if (c && c.hits + c.misses + c.bypasses > 0) {
    facts.push(
      ["cache hits", `${fmt.int(c.hits)} (${fmt.pct(c.hit_rate)} of lookups)`, "cache-hits"],
      ["saved by the cache", fmt.money(c.saved), "cache-saved"],
    );
  }
  fill(document.querySelector("#errors tbody"), facts.map(([label, value, id]) =>
    el("tr", { "data-fact": id }, el("td", {}, label), el("td", { class: "n value" }, value))), 2, "");
}

function renderBudgets(s) {
  const rows = s.budgets.map((b) => {
    const burn = Math.min(1, b.burn);
    const meter = el("div", { class: "meter" + (b.burn >= 1 ? " over" : b.burn >= 0.8 ? " warn" : "") }, el("div", { style: { width: `${(burn * 100).toFixed(1)}%` } }));
    const label = b.scope === "key" ? b.name : `${b.scope === "team" ? "team " : ""}${b.name}`;
    return el("tr", { "data-budget": b.key_id || `${b.scope}:${b.name}` },
      el("td", { class: "name" }, label, b.scope !== "key" ? el("span", { class: "tag" }, b.scope) : null),
      el("td", { class: "n spent" }, fmt.money(b.spent)),
      el("td", { class: "n limit" }, `${fmt.money(b.amount)} / ${b.period}`),
      el("td", { class: "burn", title: fmt.pct(b.burn) }, el("div", { style: { display: "flex", gap: "8px", alignItems: "center" } }, meter, el("span", { class: "pct" }, fmt.pct(b.burn)))),
      el("td", { class: "n resets" }, new Date(b.resets_at * 1000).toLocaleDateString("en-GB", { day: "numeric", month: "short" })));
  });
  fill(document.querySelector("#budgets tbody"), rows, 5, "no budgets: give keys a budget (pointsman keys create NAME --budget 50)");
}

// Flagged: a group of some size whose tier mix is far from everyone's (small groups are noise).
const skewed = (g) => g.skew >= 0.25 && g.requests >= 5;

function renderFairness(table, groups, s, kind) {
  const tiers = s.fairness.tiers;
  const deployments = s.fairness.deployments;
  const head = el("thead", {},
    el("tr", {},
      el("th", {}, ""), el("th", {}, ""),
      el("th", { class: "group", colspan: tiers.length }, "tier / route"),
      el("th", { class: "group", colspan: deployments.length }, "deployment"),
      el("th", { colspan: 3 }, "")),
    el("tr", {},
      el("th", {}, kind), el("th", { class: "n" }, "requests"),
      tiers.map((t) => el("th", { class: "n" }, t)),
      deployments.map((d) => el("th", { class: "n" }, d)),
      el("th", { class: "n" }, "cost / request"), el("th", { class: "n" }, "error rate"), el("th", { class: "n" }, "skew")));
  const overall = s.fairness.overall;
  const cell = (count, n, hue) => {
    const share = n ? count / n : 0;
    return el("td", { class: "n cell", style: { background: `hsla(${hue}, 70%, 50%, ${(share * 0.45).toFixed(3)})` } }, fmt.pct(share));
  };
  const row = (g, extra) =>
    el("tr", Object.assign({ "data-group": g.group }, extra),
      el("td", { class: "name" }, g.group),
      el("td", { class: "n requests" }, fmt.int(g.requests)),
      tiers.map((t) => cell(g.tiers[t], g.requests, 215)),
      deployments.map((d) => cell(g.deployments[d], g.requests, 150)),
      el("td", { class: "n" }, fmt.money(g.cost_per_request)),
      el("td", { class: "n" }, fmt.pct(g.error_rate)),
      el("td", { class: "n skew" + (skewed(g) ? " skewed" : "") }, g === overall ? "" : fmt.pct(g.skew)));
  const body = el("tbody", {}, groups.length ? [row(overall, { class: "overall" }), ...groups.map((g) => row(g))] :
    el("tr", {}, el("td", { class: "empty", colspan: 5 + tiers.length + deployments.length }, "no routed requests in this window")));
  table.replaceChildren(head, body);
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function renderRecent(s) {
  const rows = s.recent.map((r) => {
    const ok = r.status === 200;
    const why = el("td", { class: "why" },
      el("div", { class: "plan" }, r.plan.length ? `plan: ${r.plan.join(" → ")}` : r.error || ""),
      r.reasons.length || r.attempts.length
        ? el("details", {},
          el("summary", {}, `${plural(r.reasons.length, "reason")}, ${plural(r.attempts.length, "attempt")}`),
          el("ul", {},
            r.reasons.map((reason) => el("li", {}, reason)),
            r.attempts.map((a) => el("li", {}, `attempt ${a.deployment}: ${a.status ?? "no answer"}${a.error ? " — " + a.error : ""}`))))
        : null);
    return el("tr", { "data-request": r.request_id },
      el("td", {}, fmt.time(r.ts, false)),
      el("td", {}, r.key),
      el("td", {}, r.model || "–"),
      el("td", {}, r.route || "–"),
      el("td", {}, r.deployment || "–", r.fallback ? el("span", { class: "tag" }, "fallback") : null),
      el("td", { class: ok ? "status-ok" : "status-bad" }, String(r.status)),
      el("td", { class: "n" }, fmt.money(r.cost)),
      el("td", { class: "n" }, fmt.ms(r.latency_ms)),
      why);
  });
  fill(document.querySelector("#recent tbody"), rows, 9, "no requests in this window");
}

// -- wiring -----------------------------------------------------------------------------------

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = document.getElementById("key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  document.getElementById("key").value = "";
  load();
});
document.getElementById("since").addEventListener("change", load);
document.getElementById("refresh").addEventListener("click", load);
document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_ITEM);
  showLogin();
});
document.getElementById("auto").addEventListener("change", (event) => {
  if (timer) clearInterval(timer);
  timer = event.target.checked ? setInterval(load, 15000) : null;
});
document.getElementById("window").addEventListener("submit", (event) => event.preventDefault());
load();
