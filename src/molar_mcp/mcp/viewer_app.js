// The Molar trace viewer as an MCP App (served by viewer_app.py, placeholders filled there): the
// postMessage JSON-RPC side of an app, and the renderer. Trace text enters the DOM only as text nodes.
(function () {
  "use strict";
  var nextId = 1, pending = {}, ready = false, root = document.getElementById("app");
  function send(msg) { window.parent.postMessage(msg, "*"); }
  function request(method, params) {
    var id = nextId++;
    send({ jsonrpc: "2.0", id: id, method: method, params: params });
    return new Promise(function (resolve, reject) { pending[id] = { resolve: resolve, reject: reject }; });
  }
  function notify(method, params) { send({ jsonrpc: "2.0", method: method, params: params || {} }); }

  function t(text) { return document.createTextNode(text == null ? "" : String(text)); }
  function el(tag, attrs) {
    var node = document.createElement(tag), i;
    for (var k in (attrs || {})) {
      if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) node.setAttribute(k, String(attrs[k]));
    }
    for (i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) c.forEach(function (x) { if (x) node.appendChild(typeof x === "string" ? t(x) : x); });
      else node.appendChild(typeof c === "string" || typeof c === "number" ? t(c) : c);
    }
    return node;
  }
  function secs(ms) { return ms == null ? "\u2014" : (ms / 1000).toFixed(2) + " s"; }
  function mark(ok) { return ok === true ? ["ok", "\u2713"] : ok === false ? ["failed", "\u2717"] : ["unknown", "\u00b7"]; }
  function body(text, label) {
    if (!text) return null;
    return el("details", { "class": "body" }, el("summary", null, label + " \u00b7 " + text.length.toLocaleString("en-US") + " chars"),
      el("pre", null, text));
  }

  function header(f) {
    var meta = [el("span", { "class": "mono" }, f.short_id)];
    if (f.scenario) meta.push(el("span", { "class": "mono" }, f.scenario));
    if (f.created_at) meta.push(el("span", null, f.created_at));
    if (f.duration_ms != null) meta.push(el("span", null, secs(f.duration_ms)));
    if (f.code_sha) meta.push(el("span", null, "commit ", el("span", { "class": "mono" }, f.code_sha)));
    return el("header", null,
      el("span", { "class": "badge " + f.status, id: "status" }, String(f.status || "").toUpperCase()),
      el("h1", null, f.title || f.short_id), el("p", { "class": "meta" }, meta),
      f.failure_signature ? el("p", { "class": "meta" }, "signature ", el("code", null, f.failure_signature)) : null);
  }
  function failure(f) {
    var s = f.failing_step, a = f.failed_assertion;
    if (!s) {
      return (f.status === "failed" || f.status === "error")
        ? el("section", { "class": "failure", id: "failure" }, el("h2", null, "Failed"), el("p", null, "No failing step was recorded."))
        : null;
    }
    var parts = [el("h2", null, "Failing step " + s.step + ": " + s.title)];
    if (a) {
      parts.push(el("p", { id: "failed-assertion" }, el("strong", null, "Assertion failed"), " ", el("code", null, a.message)));
      if (a.expected != null || a.actual != null) {
        parts.push(el("div", { "class": "assert" },
          el("div", { "class": "expected" }, el("span", { "class": "label" }, "expected"), el("code", null, a.expected || "")),
          el("div", { "class": "actual" }, el("span", { "class": "label" }, "actual"), el("code", null, a.actual || ""))));
      }
    }
    return el("section", { "class": "failure", id: "failure" }, parts);
  }
  function findings(f) {
    var list = f.findings || [];
    if (!list.length) return null;
    return el("section", { id: "findings" }, el("h2", null, "Findings"), el("ol", { "class": "findings" },
      list.map(function (x, i) {
        var where = x.critical_step != null ? " \u00b7 step " + x.critical_step : "";
        return el("li", { "class": i === 0 ? "top" : null, "data-label": x.label }, el("code", null, x.label), " ", x.summary, " ",
          el("span", { "class": "conf" }, "(" + Math.round(x.confidence * 100) + "%" + where + ")"));
      })));
  }
  function causalRequest(r) {
    if (!r) return null;
    var status = r.status != null ? String(r.status) : (r.note || "no response");
    var d1 = body(r.request_body, "request body"), d2 = body(r.response_body, "response body");
    [d1, d2].forEach(function (d) { if (d && d.textContent.length < 2000) d.open = true; });
    return el("section", { "class": "causal-request", id: "causal-request" }, el("h2", null, "The request that caused it"),
      el("p", { "class": "mono" }, (r.step != null ? "step " + r.step + " \u00b7 " : "") + "seq " + r.seq + " \u00b7 " + r.method + " " + r.url + " \u2192 ",
        el("strong", null, status)), d1, d2);
  }
  function eventsTable(lines, id) {
    return el("table", { "class": "events", id: id }, el("thead", null, el("tr", null, ["seq", "time", "", "kind", "detail"].map(function (h) { return el("th", null, h); }))),
      el("tbody", null, lines.map(function (ev) {
        var m = mark(ev.ok);
        return el("tr", { "class": ev.ok === false ? "failed" : null }, el("td", { "class": "n" }, ev.seq),
          el("td", { "class": "n" }, ev.offset_ms == null ? "" : "+" + secs(ev.offset_ms)),
          el("td", { "class": m[0] }, el("span", { "class": "mark" }, m[1])), el("td", { "class": "mono" }, ev.kind),
          el("td", { "class": "mono" }, ev.text, body(ev.body, "body")));
      })));
  }
  function steps(f) {
    var list = f.steps || [];
    if (!list.length) return el("section", { id: "steps" }, el("h2", null, "Steps"), el("p", { "class": "muted" }, "No steps were recorded."));
    var failed = list.filter(function (s) { return s.ok === false; }).length, items = [];
    list.forEach(function (s) {
      var m = mark(s.ok), cls = m[0], sign = m[1], tag = null, id = s.path || String(s.step);
      if (f.causal_step != null && !s.depth && s.step === f.causal_step) {
        cls = s.ok === false ? "failed causal" : "causal"; sign = s.ok === false ? "\u2717" : "!";
        tag = el("span", { "class": "tag" }, "cause");
      }
      var li = el("li", { "class": cls, "data-step": id }, el("span", { "class": "mark" }, sign), el("span", { "class": "num" }, id),
        el("span", null, s.title, tag), el("span", { "class": "time" }, s.offset_ms == null ? "" : "+" + secs(s.offset_ms)),
        el("span", { "class": "time" }, secs(s.duration_ms)), el("span", { "class": "count" }, s.event_count == null ? "" : s.event_count + " ev"));
      if (s.depth) li.style.marginLeft = (1.2 * s.depth).toFixed(1) + "em";
      items.push(li);
      if (!s.depth && s.step === f.causal_step && (f.causal_step_events || []).length) {
        items.push(el("li", { "class": "detail" }, eventsTable(f.causal_step_events, "causal-step-events")));
      }
      if (s.failing && (f.failing_step_events || []).length) {
        items.push(el("li", { "class": "detail" }, eventsTable(f.failing_step_events, "failing-step-events")));
      }
    });
    return el("section", { id: "steps" }, el("h2", null, "Steps ", el("span", { "class": "muted" }, "(" + list.length + ", " + failed + " failed)")),
      el("ol", { "class": "timeline" }, items));
  }
  function screenshot(shot) {
    if (!shot) return null;
    var inner = shot.data_uri
      ? el("img", { src: shot.data_uri, alt: shot.name || "screenshot" })
      : el("p", { "class": "muted" }, shot.note || "");
    return el("section", { "class": "shot", id: "screenshot" }, el("h2", null, "Screenshot ", el("span", { "class": "muted" }, shot.name || "")), inner);
  }

  // Without the facts (a host that did not declare the extension), draw what the structured content holds.
  function fromStructured(sc) {
    if (!sc) return null;
    if (sc.trace) {
      var fl = sc.failure || null, tr = sc.trace;
      return {
        short_id: tr.short_id, title: tr.title || tr.scenario || tr.short_id, scenario: tr.scenario, status: tr.status,
        created_at: tr.created_at, duration_ms: tr.duration_ms, code_sha: tr.code_sha, failure_signature: tr.failure_signature,
        steps: (sc.steps || []).map(function (s) {
          var depth = s.path ? s.path.split(".").length - 1 : 0;
          return { step: s.step, path: depth ? s.path : "", depth: depth, title: s.title || "", ok: s.ok, event_count: s.events,
            failing: !!fl && !depth && s.step === fl.step };
        }),
        failing_step: fl && fl.step != null ? { step: fl.step, title: fl.step_title || "" } : null,
        failed_assertion: fl && (fl.expected != null || fl.actual != null) ? { message: fl.message || "", expected: fl.expected, actual: fl.actual } : null,
        findings: [], failing_step_events: []
      };
    }
    if (sc.findings) {
      return { short_id: sc.short_id || sc.trace_id, title: sc.short_id || sc.trace_id, status: sc.status, steps: [],
        findings: sc.findings, causal_step: sc.findings.length ? sc.findings[0].critical_step : null,
        failure_signature: sc.failure_signature };
    }
    return null;
  }

  function render(result) {
    var meta = (result && result._meta && result._meta["molar/viewer"]) || null;
    var f = meta && meta.facts ? meta.facts : fromStructured(result && result.structuredContent);
    root.textContent = "";
    if (result && result.isError || !f) {
      var text = ((result && result.content) || []).filter(function (c) { return c.type === "text"; }).map(function (c) { return c.text; }).join("\n");
      root.appendChild(el("section", { id: "message" }, el("h2", null, result && result.isError ? "The call failed" : "Nothing to show"),
        el("pre", null, text)));
    } else {
      [header(f), failure(f), findings(f), causalRequest(f.causal_request), steps(f), screenshot(meta && meta.screenshot),
        meta && meta.error ? el("p", { "class": "muted", id: "view-error" }, meta.error) : null,
        el("footer", null, "Molar trace " + f.short_id + ". Secrets in the trace are masked.")
      ].forEach(function (n) { if (n) root.appendChild(n); });
    }
    document.body.setAttribute("data-rendered", meta && meta.facts ? "facts" : "structured");
    sizeChanged();
  }
  function sizeChanged() {
    if (!ready) return; // nothing but ui/initialize goes to the host before the handshake is done
    var d = document.documentElement;
    notify("ui/notifications/size-changed", { width: d.scrollWidth, height: d.scrollHeight });
  }

  window.addEventListener("message", function (event) {
    if (event.source !== window.parent) return;
    var m = event.data;
    if (!m || m.jsonrpc !== "2.0") return;
    if (m.method === undefined && m.id !== undefined) {
      var p = pending[m.id];
      if (p) { delete pending[m.id]; if (m.error) p.reject(m.error); else p.resolve(m.result); }
      return;
    }
    if (m.method === "ui/notifications/tool-input") {
      if (!document.body.hasAttribute("data-rendered")) root.textContent = "Loading the trace\u2026";
    } else if (m.method === "ui/notifications/tool-result") {
      render(m.params || {});
    } else if (m.method === "ui/notifications/tool-cancelled") {
      root.textContent = "The call was cancelled.";
    } else if (m.id !== undefined) {
      if (m.method === "ui/resource-teardown" || m.method === "ping") send({ jsonrpc: "2.0", id: m.id, result: {} });
      else send({ jsonrpc: "2.0", id: m.id, error: { code: -32601, message: "Method not found: " + m.method } });
    }
  });
  if (window.ResizeObserver) new ResizeObserver(sizeChanged).observe(document.body);
  request("ui/initialize", {
    protocolVersion: "%(protocol)s",
    appInfo: { name: "molar-trace-viewer", version: "%(version)s" },
    appCapabilities: { availableDisplayModes: ["inline"] }
  }).then(function () {
    notify("ui/notifications/initialized", {});
    ready = true;
    sizeChanged();
  }, function (err) {
    root.textContent = "The host refused to start the viewer: " + (err && err.message || err);
  });
})();
