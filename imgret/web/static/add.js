// The add page: upload files or name a folder on the server; the indexing job runs in the
// server, with its progress here, and the new images are shown when it ends.
"use strict";

(() => {
  const { api, el, card, status, loadInfo, waitForJob } = imgret;
  const $ = (id) => document.getElementById(id);
  let busy = false;
  // The page's set-up (info, folders). The listeners come first, so that files chosen while
  // the page loads are not lost: an add waits for this.
  let ready = Promise.resolve();

  function progress(job) {
    $("job").hidden = false;
    $("job-title").textContent = `${job.kind === "add" ? "Adding" : "Removing"} ${job.what}`;
    $("progress").max = Math.max(1, job.total);
    $("progress").value = job.done;
    const state = { queued: "waiting for an earlier job", running: "indexing", done: "done", failed: "failed" }[job.state];
    $("job-text").textContent = `${job.done.toLocaleString()} of ${job.total.toLocaleString()} files · ${state} · ${job.seconds} s`;
  }

  async function run(start) {
    if (busy) return;
    busy = true;
    await ready;
    $("new-section").hidden = true;
    $("failures").replaceChildren();
    status("");
    try {
      const job = await waitForJob((await start()).id, progress);
      const r = job.report;
      status(`${r.added.toLocaleString()} added, ${r.updated.toLocaleString()} updated, ${r.unchanged.toLocaleString()} already there, ${r.failed.length} could not be read; the collection has ${r.count.toLocaleString()} images`);
      $("failures").replaceChildren(...r.failed.map(([name, reason]) => el("li", {}, `${name}: ${reason}`)));
      const items = await Promise.all(job.new_ids.map((id) => api(`/api/items/${id}`)));
      $("new-title").textContent = `New images (${job.new_ids.length.toLocaleString()})`;
      $("new-grid").replaceChildren(...items.map((item) => card(item)));
      $("new-section").hidden = !items.length;
      loadInfo();
    } catch (err) {
      status(err.message, true);
    } finally {
      busy = false;
    }
  }

  function addFiles(files) {
    const list = [...files];
    if (!list.length) return;
    run(() => {
      const form = new FormData();
      for (const f of list) form.append("files", f, f.name);
      return api("/api/add/files", { method: "POST", body: form });
    });
  }

  async function setUp() {
    try {
      const info = await loadInfo();
      if (!info.can_add) {
        status("this server does not let the pages add images (imgret serve --allow-add DIR)", true);
        return;
      }
      const folders = await api("/api/add/folders");
      $("root").textContent = `Folders under ${folders.root}`;
      $("folder").replaceChildren(...folders.folders.map((f) => el("option", { value: f }, f || "(the folder itself)")));
    } catch (err) {
      status(err.message, true);
    }
  }

  function start() {
    listen();
    ready = setUp();
  }

  function listen() {
    $("files").addEventListener("change", (e) => {
      addFiles(e.target.files);
      e.target.value = "";
    });
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      addFiles(e.dataTransfer.files);
    });
    $("folder-form").addEventListener("submit", (e) => {
      e.preventDefault();
      run(() => api("/api/add/folder", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ folder: $("folder").value }),
      }));
    });
  }

  start();
})();
