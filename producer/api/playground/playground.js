// The playground: one page over the public HTTP API (nothing here the API does not offer to any
// client). The key is kept in sessionStorage; the options form is generated from the job's JSON
// Schema in /openapi.json (the one source of options); images go to the store through presigned
// PUTs; progress comes from the job's Server-Sent Events, read with fetch (an EventSource cannot
// send an Authorization header). Text from the API is only ever set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "stylequeue.key";
const OUTPUT = "stylequeue.output";
let schema = null;   // the params' JSON Schema properties
let watching = null; // the AbortController of the stream being read

function key() { return sessionStorage.getItem(KEY) || ""; }

function fail(message) { $("error").textContent = message; }

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${key()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) {
    const e = (data && data.error) || {};
    const where = e.field ? ` (${e.field})` : "";
    throw new Error(`${r.status} ${e.type || r.statusText}: ${e.message || ""}${where}`);
  }
  return data;
}

// ---- the options form, from the JSON Schema ----

function control(name, spec) {
  const fallback = spec.default;
  let input;
  if (Array.isArray(spec.enum)) {
    input = document.createElement("select");
    for (const v of spec.enum) input.add(new Option(String(v), JSON.stringify(v), false, v === fallback));
  } else if (spec.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = Boolean(fallback);
  } else if (spec.type === "integer" || spec.type === "number") {
    input = document.createElement("input");
    input.type = "number";
    input.step = spec.type === "integer" ? "1" : "any";
    if (spec.minimum !== undefined) input.min = spec.minimum;
    if (spec.maximum !== undefined) input.max = spec.maximum;
    if (fallback !== undefined && fallback !== null) input.value = fallback;
  } else if (spec.type === "array" && spec.items && Array.isArray(spec.items.enum)) {
    input = document.createElement("select");
    input.multiple = true;
    input.size = Math.min(6, spec.items.enum.length);
    const chosen = new Set(fallback || []);
    for (const v of spec.items.enum) input.add(new Option(String(v), JSON.stringify(v), false, chosen.has(v)));
  } else { // a string, or one of several shapes (oneOf): JSON, or a bare string
    input = document.createElement("input");
    input.value = typeof fallback === "string" ? fallback : (fallback === undefined ? "" : JSON.stringify(fallback));
    input.dataset.json = spec.type === "string" ? "" : "1";
  }
  input.id = `opt-${name}`;
  input.name = name;
  return input;
}

function value(input) {
  if (input.type === "checkbox") return input.checked;
  if (input.type === "number") return input.value === "" ? undefined : Number(input.value);
  if (input.multiple) return Array.from(input.selectedOptions, (o) => JSON.parse(o.value));
  if (input.tagName === "SELECT") return JSON.parse(input.value);
  if (input.dataset.json) {
    if (input.value.trim() === "") return undefined;
    try { return JSON.parse(input.value); } catch (_) { return input.value; }
  }
  return input.value;
}

function buildOptions(properties) {
  const box = $("options");
  for (const [name, spec] of Object.entries(properties)) {
    const row = document.createElement("div");
    row.className = "option";
    const label = document.createElement("label");
    label.htmlFor = `opt-${name}`;
    label.textContent = name;
    const hint = document.createElement("small");
    hint.textContent = spec.description || "";
    row.append(label, control(name, spec), hint);
    box.append(row);
  }
}

function params() {
  const out = {};
  for (const [name, spec] of Object.entries(schema)) {
    const v = value($(`opt-${name}`));
    if (v !== undefined && JSON.stringify(v) !== JSON.stringify(spec.default)) out[name] = v;
  }
  return out;
}

// ---- images: a file is uploaded through a presigned PUT, else the URI typed is used ----

async function image(which, optional = false) {
  const file = $(`${which}-file`).files[0];
  if (!file) {
    const uri = $(`${which}-uri`).value.trim();
    if (!uri && optional) return null;
    if (!uri) throw new Error(`${which}: choose a file or type an s3:// URI`);
    return uri;
  }
  const type = file.type || "application/octet-stream";
  const { uploads } = await api("POST", "/v1/uploads", { files: [{ name: file.name, content_type: type }] });
  const up = uploads[0];
  const r = await fetch(up.url, { method: up.method, headers: up.headers, body: file });
  if (!r.ok) throw new Error(`${which}: the store refused the upload (${r.status})`);
  return up.uri;
}

// The job's "style": one URI, or {uri, mask} objects (regional styles: each where its mask is white).
function styles(...pairs) {
  const given = pairs.filter(([uri]) => uri);
  if (given.length === 1 && !given[0][1]) return given[0][0];
  return given.map(([uri, mask]) => (mask ? { uri, mask } : { uri }));
}

// ---- a job's Server-Sent Events ----

function show(job) {
  $("job").hidden = false;
  $("job-id").textContent = job.id;
  $("job-state").textContent = job.state;
  const p = job.progress;
  if (p && p.total) {
    $("job-progress").value = p.iteration / p.total;
    $("job-detail").textContent = `iteration ${p.iteration}/${p.total}, loss ${Number(p.loss).toPrecision(4)}`;
  }
  if (job.state === "SUCCESS" && job.output_url) {
    $("job-progress").value = 1;
    $("result").src = job.output_url;
    $("result").hidden = false;
  } else if (job.state === "FAILURE" && job.error) {
    $("job-detail").textContent = `${job.error.type}: ${job.error.message}`;
  }
}

function onEvent(name, data) {
  if (name === "started") $("job-state").textContent = "STARTED";
  if (name === "progress") {
    $("job-state").textContent = "PROGRESS";
    $("job-progress").value = data.iteration / data.total;
    const level = data.levels > 1 ? `, level ${data.level}/${data.levels}` : "";
    $("job-detail").textContent =
      `iteration ${data.iteration}/${data.total}, loss ${Number(data.loss).toPrecision(4)}` +
      `${level}, ${Number(data.elapsed_s).toFixed(1)} s`;
  }
  if (name === "completed") show(data);
}

async function watch(jobId) {
  if (watching) watching.abort();
  const controller = new AbortController();
  watching = controller;
  $("result").hidden = true;
  $("job-progress").value = 0;
  $("job-detail").textContent = "";
  show(await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`));
  let lastId = null;
  let done = false;
  while (!done && !controller.signal.aborted) {
    const headers = { Authorization: `Bearer ${key()}`, Accept: "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId;
    try {
      const r = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { headers, signal: controller.signal });
      if (r.status === 204) break; // ended at or before lastId: nothing follows
      if (r.status >= 400 && r.status < 500 && r.status !== 429) {
        fail(`events: ${r.status} ${r.statusText}`); // the key, the job: retrying cannot help
        return;
      }
      if (!r.ok) throw new Error(`events: ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value: chunk, done: end } = await reader.read();
        if (end) break;
        buffer += chunk;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) lastId = line.slice(4);
            else if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) onEvent(name, JSON.parse(data));
          if (name === "completed") done = true;
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
      fail(`${e.message}; reconnecting`);
    }
    if (!done) await new Promise((resolve) => setTimeout(resolve, 3000));
  }
  refresh().catch((e) => fail(e.message));
}

// ---- the tenant's recent jobs ----

async function refresh() {
  const page = await api("GET", "/v1/jobs?limit=10");
  const body = $("recent").tBodies[0];
  body.replaceChildren();
  for (const job of page.jobs) {
    const row = body.insertRow();
    const link = document.createElement("button");
    link.type = "button";
    link.textContent = job.id;
    link.addEventListener("click", () => watch(job.id).catch((e) => fail(e.message)));
    row.insertCell().append(link);
    row.insertCell().textContent = job.state;
    row.insertCell().textContent = job.created_at || "";
  }
}

// ---- start ----

async function start() {
  const tenant = await api("GET", "/v1/tenant");
  $("who").textContent = `tenant ${tenant.tenant}`;
  $("key-form").hidden = true;
  $("forget").hidden = false;
  $("app").hidden = false;
  $("output").value = sessionStorage.getItem(OUTPUT) || (tenant.output[0] ? `s3://${tenant.output[0]}` : "");
  if (!schema) {
    const doc = await (await fetch("/openapi.json")).json();
    const body = doc.paths["/v1/jobs"].post.requestBody.content["application/json"].schema;
    schema = body.properties.params.properties;
    buildOptions(schema);
  }
  await refresh();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value.trim());
  $("key").value = "";
  fail("");
  start().catch((e) => { sessionStorage.removeItem(KEY); fail(e.message); });
});

$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.reload();
});

$("refresh").addEventListener("click", () => refresh().catch((e) => fail(e.message)));

$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  fail("");
  $("submit").disabled = true;
  try {
    const output = $("output").value.trim();
    sessionStorage.setItem(OUTPUT, output);
    const [content, style, mask, style2, mask2] = await Promise.all([
      image("content"), image("style"), image("style-mask", true), image("style2", true), image("style2-mask", true),
    ]);
    if (mask2 && !style2) throw new Error("second style: its mask is given, the style is not");
    const job = await api("POST", "/v1/jobs", { content, style: styles([style, mask], [style2, mask2]), output, params: params() });
    await refresh();
    watch(job.id).catch((e) => fail(e.message));
  } catch (e) {
    fail(e.message);
  } finally {
    $("submit").disabled = false;
  }
});

if (key()) start().catch((e) => fail(e.message));
