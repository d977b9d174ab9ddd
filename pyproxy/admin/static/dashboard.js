// The pyproxy dashboard: the pools of a cluster, live figures, create/change/delete.
// It talks only to the admin API of the listener that served it, through relative URLs
// (documented in /openapi.json): v2/databases, .../pools, .../pools/NAME and .../stats.
"use strict";

(() => {
  const POLL_MS = 1000;
  const HISTORY = 60; // samples kept for the charts: one minute at one per second
  const TOKEN_KEY = "pyproxy.admin.token";
  const CLUSTER_KEY = "pyproxy.admin.cluster";
  const SVG = "http://www.w3.org/2000/svg";
  const CHART_W = 84;
  const CHART_H = 24;
  const MODES = ["transaction", "session", "statement"];
  const COLUMNS = ["Pool", "Mode", "Size", "Database", "User", "Clients", "Servers",
    "Waiting", "Transactions/s", "Wait time", "Actions"];

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    clusters: [],
    cluster: null,
    pools: new Map(), // name -> pool object from the pools API
    rows: new Map(), // name -> row record (see makeRow)
    last: null, // the previous stats sample: {at, pools: Map(name -> figures)}
    timer: 0,
    generation: 0, // bumped when the view changes, so late answers are dropped
    loading: false,
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "pyproxy could not be reached (" + err.message + ")");
    }
    if (resp.status === 204) return null;
    let data = null;
    try {
      data = await resp.json();
    } catch (err) {
      data = null;
    }
    if (!resp.ok) {
      const message = data && typeof data.message === "string" ? data.message
        : "HTTP status " + resp.status;
      throw new ApiError(resp.status, message);
    }
    return data;
  }

  const clusterPath = () => "v2/databases/" + encodeURIComponent(state.cluster.id);
  const poolPath = (name) => clusterPath() + "/pools/" + encodeURIComponent(name);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("aria") || key === "role" || key === "for" || key === "colspan") {
        node.setAttribute(key.replace(/^aria([A-Z])/, (_, c) => "aria-" + c.toLowerCase()), value);
      } else node[key] = value;
    }
    for (const child of children) if (child !== null) node.append(child);
    return node;
  }

  function say(text) {
    $("status").textContent = text;
  }

  function pageError(text) {
    $("page-error").textContent = text;
  }

  // ---- signing in and out ------------------------------------------------------------------

  async function enter() {
    try {
      const data = await api("GET", "v2/databases");
      showApp(data.databases);
    } catch (err) {
      if (err.status !== 401) {
        showLogin(err.message);
        return;
      }
      const hadToken = Boolean(state.token);
      forgetToken();
      showLogin(hadToken ? "The saved token is no longer accepted: sign in again." : "");
    }
  }

  function showLogin(message) {
    stopPolling();
    $("app").hidden = true;
    $("signout").hidden = true;
    $("cluster-pick").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  function forgetToken() {
    state.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) {
      $("login-error").textContent = "Enter the admin token.";
      return;
    }
    state.token = token;
    $("login-error").textContent = "Checking…";
    try {
      const data = await api("GET", "v2/databases");
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token").value = "";
      showApp(data.databases);
    } catch (err) {
      state.token = "";
      $("login-error").textContent = err.status === 401
        ? "That token was not accepted. Check [admin] token (or token_env) in the configuration."
        : err.message;
    }
  }

  function signOut(message) {
    forgetToken();
    clearView();
    showLogin(message);
  }

  // ---- the cluster -------------------------------------------------------------------------

  function showApp(clusters) {
    state.clusters = clusters;
    $("login").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = !state.token;
    const pick = $("cluster");
    pick.replaceChildren(...clusters.map((c) => el("option", { value: c.id, text: c.id })));
    $("cluster-pick").hidden = clusters.length < 2;
    if (!clusters.length) {
      pageError("No cluster is configured: add a [[clusters]] table to the configuration.");
      return;
    }
    const saved = sessionStorage.getItem(CLUSTER_KEY);
    const chosen = clusters.find((c) => c.id === saved) || clusters[0];
    pick.value = chosen.id;
    selectCluster(chosen.id);
  }

  function selectCluster(id) {
    clearView();
    state.cluster = state.clusters.find((c) => c.id === id);
    sessionStorage.setItem(CLUSTER_KEY, id);
    const c = state.cluster;
    const conn = c.connection || {};
    $("cluster-line").textContent = `Cluster ${c.id} · PostgreSQL at ${c.host}:${c.port}` +
      (conn.port ? ` · clients connect to ${shownHost(conn.host)}:${conn.port}` : "");
    $("user-list").replaceChildren(...(c.users || []).map((u) => el("option", { value: u.name })));
    loadPools();
    poll();
  }

  function clearView() {
    state.generation += 1;
    stopPolling();
    state.pools.clear();
    state.rows.clear();
    state.last = null;
    $("pool-rows").replaceChildren();
    pageError("");
    say("");
  }

  function stopPolling() {
    clearTimeout(state.timer);
    state.timer = 0;
  }

  // ---- the table of pools ------------------------------------------------------------------

  async function loadPools() {
    const generation = state.generation;
    state.loading = true;
    try {
      const data = await api("GET", clusterPath() + "/pools");
      if (generation === state.generation) reconcile(data.pools);
    } catch (err) {
      if (generation !== state.generation) return;
      if (err.status === 401) signOut("The token is no longer accepted: sign in again.");
      else pageError("The pools could not be listed: " + err.message);
    } finally {
      if (generation === state.generation) state.loading = false;
    }
  }

  function reconcile(pools) {
    const body = $("pool-rows");
    const wanted = new Set(pools.map((p) => p.name));
    for (const [name, row] of state.rows) {
      if (wanted.has(name)) continue;
      row.tr.remove();
      row.details.remove();
      state.rows.delete(name);
      state.pools.delete(name);
    }
    // Rows already in place stay put (moving one would take the focus from its controls).
    let cursor = body.firstElementChild;
    for (const pool of pools) {
      state.pools.set(pool.name, pool);
      let row = state.rows.get(pool.name);
      if (!row) {
        row = makeRow(pool);
        state.rows.set(pool.name, row);
      }
      fillSettings(row, pool);
      for (const node of [row.tr, row.details]) {
        if (node === cursor) cursor = cursor.nextElementSibling;
        else body.insertBefore(node, cursor);
      }
    }
    $("no-pools").hidden = pools.length > 0;
  }

  function cell(field, label) {
    return el("td", { dataset: { field, label } });
  }

  function makeRow(pool) {
    const name = pool.name;
    const tr = el("tr", { dataset: { pool: name } });
    const detailsId = "details-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
    const row = {
      tr,
      name,
      editing: false,
      history: [],
      nameCell: el("th", { scope: "row", dataset: { field: "name", label: COLUMNS[0] } }),
      mode: cell("mode", COLUMNS[1]),
      size: cell("size", COLUMNS[2]),
      db: cell("db", COLUMNS[3]),
      user: cell("user", COLUMNS[4]),
      clients: cell("clients", COLUMNS[5]),
      servers: cell("servers", COLUMNS[6]),
      waiting: cell("waiting", COLUMNS[7]),
      tps: chartCell("tps", COLUMNS[8], `Transactions per second of pool ${name}`),
      wait: chartCell("wait", COLUMNS[9], `Wait time of pool ${name}`),
      actions: cell("actions", COLUMNS[10]),
      error: el("p", { className: "error row-error", role: "alert" }),
      details: el("tr", { className: "details", id: detailsId, hidden: true,
        dataset: { detailsFor: name } }),
      showPassword: false,
    };
    for (const c of [row.clients, row.servers, row.waiting]) {
      c.classList.add("num");
      c.textContent = "–";
    }
    tr.append(row.nameCell, row.mode, row.size, row.db, row.user, row.clients, row.servers,
      row.waiting, row.tps.td, row.wait.td, row.actions);
    row.pausedBadge = el("span", { className: "badge paused", text: "paused", hidden: true });
    row.detailsButton = el("button", { type: "button", className: "link details-link",
      text: "Connection details", ariaLabel: `Connection details for pool ${name}`,
      ariaExpanded: "false", ariaControls: detailsId, dataset: { action: "details" } });
    return row;
  }

  function fillSettings(row, pool) {
    const kind = pool.source === "config" ? "file" : "api";
    if (row.kind !== kind) {
      row.kind = kind;
      row.nameCell.replaceChildren(...[
        el("span", { className: "pool-name", text: pool.name }),
        kind === "file" ? el("span", { className: "badge", text: "config file",
          title: "Defined in the configuration file: change it there" }) : null,
        row.pausedBadge,
        row.detailsButton,
      ].filter(Boolean));
      row.actionsFor = "";
    }
    row.db.textContent = pool.db;
    row.user.replaceChildren(pool.user ? document.createTextNode(pool.user)
      : el("span", { className: "muted", text: "each client's own" }));
    if (!row.editing) {
      row.mode.textContent = pool.mode;
      row.size.textContent = String(pool.size);
      if (row.actionsFor !== kind) {
        row.actionsFor = kind;
        const controls = kind === "file"
          ? [el("span", { className: "muted read-only", text: "read-only",
            title: "Pools from the configuration file are changed there, then reloaded" })]
          : [el("button", { type: "button", text: "Edit", ariaLabel: `Edit pool ${pool.name}`,
            dataset: { action: "edit" } }),
          el("button", { type: "button", className: "danger", text: "Delete",
            ariaLabel: `Delete pool ${pool.name}`, dataset: { action: "delete" } })];
        row.actions.replaceChildren(el("div", { className: "buttons" }, ...controls), row.error);
      }
    }
    if (!row.details.hidden) fillDetails(row);
  }

  function startEdit(row) {
    const pool = state.pools.get(row.name);
    row.editing = true;
    row.error.textContent = "";
    const size = el("input", { type: "number", name: "size", min: 1, step: 1,
      value: String(pool.size), inputMode: "numeric", ariaLabel: `Size of pool ${row.name}` });
    const mode = el("select", { name: "mode", ariaLabel: `Mode of pool ${row.name}` },
      ...MODES.map((m) => el("option", { value: m, text: m, selected: m === pool.mode })));
    size.addEventListener("keydown", (e) => {
      if (e.key === "Enter") saveEdit(row);
      if (e.key === "Escape") stopEdit(row);
    });
    row.size.replaceChildren(size);
    row.mode.replaceChildren(mode);
    row.actionsFor = "edit";
    row.actions.replaceChildren(el("div", { className: "buttons" },
      el("button", { type: "button", className: "primary", text: "Save",
        ariaLabel: `Save pool ${row.name}`, dataset: { action: "save" } }),
      el("button", { type: "button", text: "Cancel", ariaLabel: `Cancel editing pool ${row.name}`,
        dataset: { action: "cancel" } })), row.error);
    size.focus();
    size.select();
  }

  function stopEdit(row) {
    row.editing = false;
    row.actionsFor = "";
    fillSettings(row, state.pools.get(row.name));
  }

  async function saveEdit(row) {
    const pool = state.pools.get(row.name);
    const sizeText = row.size.querySelector("input").value.trim();
    const body = {
      mode: row.mode.querySelector("select").value,
      size: /^\d+$/.test(sizeText) ? Number(sizeText) : sizeText,
      db: pool.db,
      user: pool.user,
    };
    row.error.textContent = "";
    try {
      await api("PUT", poolPath(row.name), body);
    } catch (err) {
      row.error.textContent = `Pool ${row.name} was not changed: ${err.message}`;
      return;
    }
    state.pools.set(row.name, { ...pool, mode: body.mode, size: body.size });
    stopEdit(row);
    say(`Pool ${row.name} changed: ${body.mode} mode, size ${body.size}.`);
    loadPools();
  }

  async function remove(row) {
    const ok = window.confirm(`Delete pool "${row.name}"? Its clients are disconnected and ` +
      "its server connections closed.");
    if (!ok) return;
    row.error.textContent = "";
    try {
      await api("DELETE", poolPath(row.name));
    } catch (err) {
      row.error.textContent = `Pool ${row.name} was not deleted: ${err.message}`;
      return;
    }
    say(`Pool ${row.name} deleted.`);
    await loadPools();
  }

  function toggleDetails(row) {
    const open = row.details.hidden;
    row.details.hidden = !open;
    row.detailsButton.setAttribute("aria-expanded", String(open));
    if (open) fillDetails(row);
  }

  function onRowClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const tr = button.closest("tr");
    const name = tr.dataset.pool || tr.dataset.detailsFor;
    const row = state.rows.get(name);
    if (!row) return;
    const action = button.dataset.action;
    if (action === "details") toggleDetails(row);
    else if (action === "edit") startEdit(row);
    else if (action === "cancel") stopEdit(row);
    else if (action === "save") saveEdit(row);
    else if (action === "delete") remove(row);
    else if (action === "copy") copy(button);
    else if (action === "reveal") {
      row.showPassword = !row.showPassword;
      fillDetails(row);
      row.details.querySelector('[data-action="reveal"]').focus();
    }
  }

  // ---- connection details: DigitalOcean's three formats -------------------------------------

  function shownHost(host) {
    // A wildcard listen address is not where clients connect: use the host of this page.
    if (!host || host === "0.0.0.0" || host === "::") return location.hostname;
    return host;
  }

  function shellQuote(text) {
    return /^[A-Za-z0-9_@%+=:,./-]+$/.test(text) ? text : "'" + text.replace(/'/g, "'\\''") + "'";
  }

  function connectionFormats(pool, reveal) {
    const conn = pool.connection || {};
    const host = shownHost(conn.host);
    const port = String(conn.port);
    const database = conn.database || pool.name;
    const sslmode = (/[?&]sslmode=([^&]+)/.exec(conn.uri || "") || [])[1] ||
      (conn.ssl ? "require" : "disable");
    const user = conn.user || "<user>";
    const known = typeof conn.password === "string";
    // The password as shown (masked unless revealed) or copied (always real), per format.
    const secret = (show, quote) => (!known ? "<password>" : show ? quote(conn.password)
      : "••••••••");
    const plain = (text) => text;
    const urlHost = host.includes(":") ? `[${host}]` : host;
    const url = (show) => `postgresql://${conn.user ? encodeURIComponent(user) : user}:` +
      `${secret(show, encodeURIComponent)}@${urlHost}:${port}/` +
      `${encodeURIComponent(database)}?sslmode=${sslmode}`;
    const flags = (show) => `PGPASSWORD=${secret(show, shellQuote)} PGSSLMODE=${sslmode} ` +
      `psql -U ${conn.user ? shellQuote(user) : user} -h ${shellQuote(host)} -p ${port} ` +
      `-d ${shellQuote(database)}`;
    return {
      params: [["username", user], ["password", secret(reveal, plain)], ["host", host],
        ["port", port], ["database", database], ["sslmode", sslmode]],
      paramsText: `username = ${user}\npassword = ${secret(true, plain)}\nhost = ${host}\n` +
        `port = ${port}\ndatabase = ${database}\nsslmode = ${sslmode}`,
      uri: url(reveal),
      uriText: url(true),
      flags: flags(reveal),
      flagsText: flags(true),
      known,
      fixedUser: Boolean(conn.user),
    };
  }

  function fillDetails(row) {
    const pool = state.pools.get(row.name);
    if (!pool) return;
    const f = connectionFormats(pool, row.showPassword);
    const block = (title, id, content, text) => el("section", { className: "format",
      ariaLabelledby: id },
      el("div", { className: "format-head" },
        el("h3", { id, text: title }),
        el("button", { type: "button", className: "quiet", text: "Copy",
          ariaLabel: `Copy ${title.toLowerCase()} of pool ${row.name}`,
          dataset: { action: "copy", copy: text } })),
      content);
    const base = row.details.id;
    const params = el("dl", { className: "params" },
      ...f.params.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    const td = el("td", { colspan: String(COLUMNS.length) },
      el("div", { className: "details-head" },
        el("h2", { text: `Connection details for ${row.name}` }),
        f.known ? el("button", { type: "button", className: "quiet",
          text: row.showPassword ? "Hide password" : "Show password",
          ariaPressed: String(row.showPassword), dataset: { action: "reveal" } }) : null),
      f.fixedUser ? null : el("p", { className: "muted", text: "This pool has no fixed user: " +
        "each client logs in with its own PostgreSQL user and password." }),
      el("div", { className: "formats" },
        block("Connection parameters", base + "-params", params, f.paramsText),
        block("Connection string", base + "-uri", el("code", { text: f.uri }), f.uriText),
        block("Flags", base + "-flags", el("code", { text: f.flags }), f.flagsText)));
    row.details.replaceChildren(td);
  }

  async function copy(button) {
    const text = button.dataset.copy;
    try {
      await navigator.clipboard.writeText(text);
      say("Copied to the clipboard.");
    } catch (err) {
      say("The browser refused the clipboard: select the text and copy it by hand.");
    }
  }

  // ---- creating a pool ---------------------------------------------------------------------

  async function create(event) {
    event.preventDefault();
    const sizeText = $("create-size").value.trim();
    const body = {
      name: $("create-name").value.trim(),
      db: $("create-db").value.trim(),
      user: $("create-user").value.trim(),
      size: /^\d+$/.test(sizeText) ? Number(sizeText) : (sizeText || null),
      mode: $("create-mode").value,
    };
    const submit = event.target.querySelector('button[type="submit"]');
    $("create-error").textContent = "";
    submit.disabled = true;
    try {
      await api("POST", clusterPath() + "/pools", body);
      say(`Pool ${body.name} created.`);
      $("create-name").value = "";
      await loadPools();
    } catch (err) {
      $("create-error").textContent = `The pool was not created: ${err.message}`;
    } finally {
      submit.disabled = false;
    }
  }

  // ---- live figures ------------------------------------------------------------------------

  function chartCell(field, label, title) {
    const td = cell(field, label);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${CHART_W} ${CHART_H}`);
    svg.setAttribute("width", String(CHART_W));
    svg.setAttribute("height", String(CHART_H));
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", title + ": no data yet");
    svg.setAttribute("class", "spark");
    const area = document.createElementNS(SVG, "path");
    area.setAttribute("class", "area");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "line");
    svg.append(area, line);
    const value = el("span", { className: "spark-value", text: "–" });
    td.append(svg, value);
    return { td, svg, area, line, value, title };
  }

  function draw(chart, values, floor, format) {
    if (chart.td.dataset.field === "tps") chart.td.title = "";
    const w = CHART_W;
    const h = CHART_H;
    const top = Math.max(floor, ...values);
    const step = w / (HISTORY - 1);
    const start = (HISTORY - values.length) * step;
    const pts = values.map((v, i) => [start + i * step, h - 2 - (h - 4) * (v / top)]);
    const text = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    chart.line.setAttribute("points", text);
    chart.area.setAttribute("d", pts.length
      ? `M${pts[0][0].toFixed(1)},${h} L${text.replace(/ /g, " L")} L${pts[pts.length - 1][0]
        .toFixed(1)},${h} Z` : "");
    const now = values.length ? values[values.length - 1] : 0;
    chart.value.textContent = format(now);
    chart.svg.setAttribute("aria-label",
      `${chart.title}: ${format(now)} now, at most ${format(Math.max(0, ...values))} ` +
      "in the last minute");
  }

  function uncounted(chart) {
    // A session-mode client keeps its server: the pool counts no transactions to chart.
    chart.line.setAttribute("points", "");
    chart.area.setAttribute("d", "");
    chart.value.textContent = "n/a";
    chart.td.title = "Session pools count no transactions: a client keeps its server";
    chart.svg.setAttribute("aria-label", `${chart.title}: not counted in session mode`);
  }

  const formatRate = (v) => (v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString()) + "/s";
  const formatWait = (s) => (s < 1 ? (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms"
    : s.toFixed(1) + " s");

  async function poll() {
    const generation = state.generation;
    stopPolling();
    try {
      const data = await api("GET", clusterPath() + "/stats");
      if (generation !== state.generation) return;
      applyStats(data.stats);
      if ($("page-error").dataset.live) {
        pageError("");
        delete $("page-error").dataset.live;
      }
    } catch (err) {
      if (generation !== state.generation) return;
      if (err.status === 401) {
        signOut("The token is no longer accepted: sign in again.");
        return;
      }
      pageError("Live figures are not coming in: " + err.message + ". Retrying.");
      $("page-error").dataset.live = "1";
    }
    if (generation === state.generation) state.timer = setTimeout(poll, POLL_MS);
  }

  function applyStats(stats) {
    $("remaining").textContent = String(stats.pools_size_free);
    $("budget-line").textContent = `of ${stats.connection_budget} (pool sizes add up to ` +
      `${stats.pools_size_sum}; ${stats.server_connections} open now)`;
    $("create-size-hint").textContent = `at most ${stats.pools_size_free}`;
    const previous = state.last;
    const figures = new Map();
    let stale = stats.pools.length !== state.rows.size;
    for (const p of stats.pools) {
      figures.set(p.name, p);
      const row = state.rows.get(p.name);
      const pool = state.pools.get(p.name);
      if (!row || !pool) {
        stale = true;
        continue;
      }
      if (pool.size !== p.size || pool.mode !== p.mode) stale = true;
      showCounts(row, p);
      const before = previous && previous.pools.get(p.name);
      const seconds = previous ? stats.sampled_at - previous.at : 0;
      if (before && seconds > 0) {
        const delta = (key) => Math.max(0, p[key] - before[key]);
        const waits = delta("waits_total");
        const average = waits ? delta("wait_seconds_total") / waits : 0;
        row.history.push({
          tps: delta("transactions_total") / seconds,
          wait: Math.max(average, p.longest_wait_seconds),
        });
        if (row.history.length > HISTORY) row.history.shift();
        if (p.mode === "session") uncounted(row.tps);
        else draw(row.tps, row.history.map((s) => s.tps), 1, formatRate);
        draw(row.wait, row.history.map((s) => s.wait), 0.01, formatWait);
      }
    }
    state.last = { at: stats.sampled_at, pools: figures };
    $("updated").textContent = "Live figures as of " +
      new Date(stats.sampled_at * 1000).toLocaleTimeString() + ", refreshed every second.";
    if (stale && !state.loading) loadPools();
  }

  function showCounts(row, p) {
    row.clients.textContent = String(p.clients_total);
    row.clients.title = `${p.clients_active} active, ${p.clients_idle} idle, ` +
      `${p.clients_waiting} waiting`;
    row.servers.textContent = String(p.servers_total);
    row.servers.title = `${p.servers_active} active, ${p.servers_idle} idle, ` +
      `${p.servers_login} opening, ${p.servers_being_canceled} being canceled`;
    row.waiting.textContent = String(p.clients_waiting);
    row.waiting.title = p.clients_waiting
      ? `the longest has waited ${formatWait(p.longest_wait_seconds)}` : "";
    row.waiting.classList.toggle("hot", p.clients_waiting > 0);
    row.wait.td.title = "The longer of the current longest wait and the average wait of the " +
      "clients served in the last second";
    row.pausedBadge.hidden = !p.paused;
  }

  // ---- start -------------------------------------------------------------------------------

  function start() {
    $("login-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => signOut(""));
    $("cluster").addEventListener("change", (e) => selectCluster(e.target.value));
    $("create-form").addEventListener("submit", create);
    $("pool-rows").addEventListener("click", onRowClick);
    enter();
  }

  start();
})();
