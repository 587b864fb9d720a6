// realspo annotate: the labeling page. Hand-written, no build step, no dependencies.
// Model output is untrusted: it is only ever set as textContent, never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "realspo-annotate-token";
  const KEYS = { a: "A", b: "B", t: "tie", s: "skip" };
  let token = null;
  let task = null;
  let busy = false;

  function $(id) { return document.getElementById(id); }

  // The link carries the token; keep it in this tab's sessionStorage and take it out of the
  // address bar (and so out of the history and of anything the user copies).
  function takeToken() {
    const url = new URL(window.location.href);
    const fromUrl = url.searchParams.get("token");
    if (fromUrl) {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body) {
    const options = { method: method, cache: "no-store",
                      headers: { "Authorization": "Bearer " + token } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
    if (!response.ok) { throw new Error((data && data.error) || ("HTTP " + response.status)); }
    return data;
  }

  function setState(state) { document.body.dataset.state = state; }

  function say(text) { $("message").textContent = text; }

  function showProgress(progress) {
    $("progress-bar").max = Math.max(progress.total, 1);
    $("progress-bar").value = progress.done;
    $("progress-text").textContent = progress.done + " / " + progress.total;
  }

  function turn(role, content) {
    const box = document.createElement("div");
    box.className = "turn turn-" + role;
    const who = document.createElement("span");
    who.className = "role";
    who.textContent = role;
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = content;
    box.append(who, text);
    return box;
  }

  function showTask(next) {
    showProgress(next.progress);
    if (next.done) {
      task = null;
      $("task").hidden = true;
      $("done").hidden = false;
      setState("done");
      return;
    }
    task = next;
    const prompt = $("prompt");
    prompt.replaceChildren();
    for (const t of next.prompt) {
      if (t.role === "system") {  // collapsed: the system prompt is rarely what is judged
        const details = document.createElement("details");
        const summary = document.createElement("summary");
        summary.textContent = "System prompt";
        details.append(summary, turn("system", t.content));
        prompt.append(details);
      } else {
        prompt.append(turn(t.role, t.content));
      }
    }
    $("text-a").textContent = next.a;
    $("text-b").textContent = next.b;
    $("cut-a").hidden = !next.cut_a;
    $("cut-b").hidden = !next.cut_b;
    $("response-a").classList.toggle("is-cut", next.cut_a);
    $("response-b").classList.toggle("is-cut", next.cut_b);
    $("comment").value = "";
    $("done").hidden = true;
    $("task").hidden = false;
    document.body.dataset.taskId = next.task_id;
    setState("ready");
  }

  async function loadNext() {
    showTask(await api("GET", "api/next"));
  }

  async function act(work) {
    if (busy) { return; }
    busy = true;
    setState("saving");
    try {
      await work();
      say("");
      await loadNext();
    } catch (err) {
      say("Not saved: " + err.message);
      setState(task ? "ready" : "error");
    } finally {
      busy = false;
    }
  }

  function answer(value) {
    if (!task) { return; }
    const body = { task_id: task.task_id, answer: value };
    const comment = $("comment").value.trim();
    if (comment) { body.comment = comment; }
    act(function () { return api("POST", "api/label", body); });
  }

  function undo() {
    act(function () { return api("POST", "api/undo"); });
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.target && event.target.closest && event.target.closest("textarea, input")) {
      if (event.key === "Escape") { event.target.blur(); }
      return;  // typing a comment
    }
    const key = event.key.toLowerCase();
    if (KEYS[key]) { event.preventDefault(); answer(KEYS[key]); }
    else if (key === "u") { event.preventDefault(); undo(); }
  }

  async function showOwner() {
    const data = await api("GET", "api/progress");
    $("owner").hidden = false;
    showProgress(data.labels);
    $("owner-summary").textContent = data.pairs.complete + " of " + data.pairs.total +
      " pairs answered by all their annotators; " + data.labels.done + " of " +
      data.labels.total + " labels given.";
    const rows = $("owner-rows");
    rows.replaceChildren();
    for (const [name, p] of Object.entries(data.annotators)) {
      const row = document.createElement("tr");
      const cells = [name, p.done + " / " + p.total];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        row.append(td);
      }
      const bar = document.createElement("progress");
      bar.max = Math.max(p.total, 1);
      bar.value = p.done;
      const td = document.createElement("td");
      td.append(bar);
      row.append(td);
      rows.append(row);
    }
    const report = $("owner-report");
    report.replaceChildren();
    for (const line of data.report) {
      const item = document.createElement("li");
      item.textContent = line;
      report.append(item);
    }
    setState("owner");
  }

  async function start() {
    token = takeToken();
    if (!token) {
      say("This page needs the link you were given (it carries your token).");
      setState("error");
      return;
    }
    try {
      const who = await api("GET", "api/whoami");
      if (who.role === "owner") {
        await showOwner();
        setInterval(function () { showOwner().catch(function () {}); }, 5000);
        return;
      }
      document.title = "realspo annotate: " + who.name;
      for (const button of document.querySelectorAll("button[data-answer]")) {
        button.addEventListener("click", function () { answer(button.dataset.answer); });
      }
      $("undo").addEventListener("click", undo);
      $("undo-done").addEventListener("click", undo);
      document.addEventListener("keydown", onKey);
      await loadNext();
    } catch (err) {
      say("Could not start: " + err.message);
      setState("error");
    }
  }

  start();
})();
