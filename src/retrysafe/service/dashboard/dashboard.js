// The API-log dashboard: plain DOM, no framework, no network but this server's API.
// Every value from the API is written with textContent, never as HTML.
"use strict";

(() => {
  const KEY_STORAGE = "retrysafe.apiKey";
  const API = "/api/v1/api-logs";
  const PAGE_SIZE = 25;
  const TIMELINE_PAGE = 100;
  const $ = (id) => document.getElementById(id);

  let nextLink = null;
  let selectedId = null;

  const apiKey = () => sessionStorage.getItem(KEY_STORAGE);

  class ApiFailure extends Error {}

  async function call(url) {
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${apiKey()}`, Accept: "application/json" },
      credentials: "omit",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_error) {
      body = null;
    }
    if (response.status === 401) {
      signOut("The API key was refused: it is unknown or revoked.");
      throw new ApiFailure("unauthenticated");
    }
    if (!response.ok) {
      const error = body && Array.isArray(body.errors) ? body.errors[0] : null;
      throw new ApiFailure(error ? `${error.status} ${error.code}: ${error.details}` : `HTTP ${response.status}`);
    }
    return body;
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  const statusClass = (status) => `status status-${Math.floor(status / 100)}xx`;
  const outcomeClass = (outcome) => `outcome outcome-${outcome || "none"}`;
  const shortTime = (iso) => iso.replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1");

  function badge(text, className) {
    return element("span", text, className);
  }

  function filterParams() {
    const params = new URLSearchParams();
    const add = (name, value) => {
      if (value) params.set(`filter[${name}]`, value);
    };
    add("request_id", $("filter-request-id").value.trim());
    add("idempotency_key", $("filter-idempotency-key").value.trim());
    add("status", $("filter-status").value);
    add("outcome", $("filter-outcome").value);
    // datetime-local is the browser's local time; the API wants an absolute one.
    const from = $("filter-from").value;
    const to = $("filter-to").value;
    if (from) add("created_after", new Date(from).toISOString());
    if (to) add("created_before", new Date(to).toISOString());
    params.set("page[size]", String(PAGE_SIZE));
    return params;
  }

  function logRow(entry) {
    const a = entry.attributes;
    const row = element("tr");
    row.dataset.id = entry.id;
    row.tabIndex = 0;
    row.className = "log-row";
    if (entry.id === selectedId) row.classList.add("selected");
    const statusCell = element("td");
    statusCell.append(badge(a.status, statusClass(a.status)));
    const outcomeCell = element("td");
    outcomeCell.append(badge(a.outcome || "—", outcomeClass(a.outcome)));
    row.append(
      element("td", shortTime(a.created_at), "time"),
      element("td", a.method, "method"),
      element("td", a.query ? `${a.path}?${a.query}` : a.path, "path"),
      statusCell,
      outcomeCell,
      element("td", `${a.duration_ms.toFixed(1)} ms`, "number"),
      element("td", a.request_id, "request-id"),
    );
    const open = () => openDetail(entry);
    row.addEventListener("click", open);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") open();
    });
    return row;
  }

  async function search(append) {
    const url = append && nextLink ? nextLink : `${API}?${filterParams()}`;
    $("status-line").textContent = "Searching…";
    try {
      const page = await call(url);
      const rows = $("log-rows");
      if (!append) rows.replaceChildren();
      page.data.forEach((entry) => rows.append(logRow(entry)));
      nextLink = page.links.next;
      $("more").hidden = !nextLink;
      const shown = rows.children.length;
      $("status-line").textContent =
        shown === 0 ? "No request matches." : `${shown} request${shown === 1 ? "" : "s"}${nextLink ? ", more below" : ""}.`;
    } catch (error) {
      if (!(error instanceof ApiFailure) || error.message !== "unauthenticated") {
        $("status-line").textContent = `Search failed: ${error.message}`;
      }
    }
  }

  function field(list, name, value, className) {
    list.append(element("dt", name));
    const dd = element("dd");
    if (className) dd.append(badge(value, className));
    else dd.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
    list.append(dd);
  }

  async function openDetail(entry) {
    selectedId = entry.id;
    document.querySelectorAll("#log-rows tr").forEach((row) => {
      row.classList.toggle("selected", row.dataset.id === entry.id);
    });
    const a = entry.attributes;
    $("detail").hidden = false;
    $("detail-request-id").textContent = a.request_id;
    const fields = $("detail-fields");
    fields.replaceChildren();
    field(fields, "Time (UTC)", shortTime(a.created_at));
    field(fields, "Request", `${a.method} ${a.path}${a.query ? `?${a.query}` : ""}`);
    field(fields, "Route", a.route);
    field(fields, "Status", a.status, statusClass(a.status));
    field(fields, "Error code", a.error_code);
    field(fields, "Outcome", a.outcome || "—", outcomeClass(a.outcome));
    field(fields, "Duration", `${a.duration_ms.toFixed(2)} ms`);
    field(fields, "Idempotency key", a.idempotency_key);
    field(fields, "API key", a.api_key_id);
    field(fields, "Rate limit", a.rate_limit);
    field(fields, "Log entry", entry.id);
    $("detail-request-body").textContent = a.request_body || "not stored (start the server with --api-log-bodies)";
    $("detail-response-body").textContent = a.response_body || "not stored";
    await showTimeline(entry);
  }

  async function showTimeline(entry) {
    const list = $("timeline");
    const note = $("timeline-note");
    list.replaceChildren();
    const key = entry.attributes.idempotency_key;
    if (!key) {
      note.textContent = "This request carried no Idempotency-Key: it has no replays.";
      list.append(timelineItem(entry, entry.id));
      return;
    }
    note.textContent = "Loading…";
    try {
      const params = new URLSearchParams({ "filter[idempotency_key]": key, "page[size]": String(TIMELINE_PAGE) });
      const page = await call(`${API}?${params}`);
      const entries = page.data.slice().reverse(); // oldest first: the original, then its retries
      entries.forEach((item) => list.append(timelineItem(item, entry.id)));
      const replays = entries.filter((item) => item.attributes.outcome === "replayed").length;
      note.textContent = `Key ${key}: ${entries.length} request${entries.length === 1 ? "" : "s"}, ${replays} replay${replays === 1 ? "" : "s"}${page.links.next ? ` (latest ${TIMELINE_PAGE} shown)` : ""}.`;
    } catch (error) {
      note.textContent = `Timeline unavailable: ${error.message}`;
    }
  }

  function timelineItem(entry, currentId) {
    const a = entry.attributes;
    const item = element("li", null, `timeline-item timeline-${a.outcome || "none"}`);
    if (entry.id === currentId) item.classList.add("current");
    item.append(
      element("span", shortTime(a.created_at), "time"),
      badge(a.status, statusClass(a.status)),
      badge(a.outcome || "—", outcomeClass(a.outcome)),
      element("span", `${a.method} ${a.path}`, "path"),
      element("code", a.request_id, "request-id"),
    );
    return item;
  }

  function showLogs() {
    $("sign-in").hidden = true;
    $("logs").hidden = false;
    $("sign-out").hidden = false;
    search(false);
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    $("logs").hidden = true;
    $("detail").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    $("log-rows").replaceChildren();
    $("sign-in-error").textContent = message || "";
    $("api-key").value = "";
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
      $("sign-in-error").textContent = "";
      showLogs();
    });
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      search(false);
    });
    $("clear").addEventListener("click", () => {
      $("filters").reset();
      search(false);
    });
    $("more").addEventListener("click", () => search(true));
    $("sign-out").addEventListener("click", () => signOut(""));
    $("close-detail").addEventListener("click", () => {
      $("detail").hidden = true;
      selectedId = null;
      document.querySelectorAll("#log-rows tr.selected").forEach((row) => row.classList.remove("selected"));
    });
    if (apiKey()) showLogs();
  });
})();
