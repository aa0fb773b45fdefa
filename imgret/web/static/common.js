// Shared helpers of the imgret pages: API calls, DOM building (text only, never HTML), image
// cards, pagers, the lightbox and the header. Plain JavaScript, no build step.
"use strict";

const imgret = (() => {
  // Turn FastAPI's validation errors ([{loc: ["query", "k"], msg: "..."}]) into words.
  function detailText(detail) {
    if (Array.isArray(detail)) {
      return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    }
    return detail;
  }

  // GET or POST to the API; resolves to the JSON body, rejects with the server's message.
  async function api(url, options = {}) {
    let resp;
    try {
      resp = await fetch(url, { credentials: "same-origin", ...options });
    } catch (_) {
      throw new Error("the server cannot be reached; is `imgret serve` still running?");
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      const err = new Error(detailText(body && body.detail) || resp.statusText || "request failed");
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  // el("a", {href: "/"}, "text", child, ...): children are nodes or text; null is skipped.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // The search page's address for "more like this" of an image, keeping the given settings
  // (rerank kept when false too: the collection's default may be on).
  function searchUrl(id, settings = {}) {
    const params = new URLSearchParams({ id: String(id) });
    for (const name of ["k", "mode", "rerank", "label", "folder"]) {
      const value = settings[name];
      const kept = value !== false || name === "rerank";
      if (value !== undefined && value !== null && value !== "" && kept) params.set(name, String(value));
    }
    return `/?${params}`;
  }

  // A thumbnail card. Clicking the image opens the lightbox (next/previous within its grid);
  // the caption has rank, score, name, label, cluster, and links to the full image and to
  // "more like this".
  function card(item, settings = {}) {
    const more = searchUrl(item.id, settings);
    const img = el("img", { class: "thumb", src: item.thumb, alt: item.name, loading: "lazy" });
    const link = el("a", { class: "thumb-link", href: more, title: "show larger" }, img);
    img.addEventListener("load", () => {
      link.classList.add("loaded");
      if (img.naturalWidth < 48 && img.naturalHeight < 48) img.classList.add("tiny");
    });
    img.addEventListener("error", () => {
      link.classList.add("loaded");
      const fig = img.closest(".card");
      if (fig) fig.classList.add("missing");
      link.title = "this image cannot be shown";
    });
    const meta = [];
    if (item.label) meta.push(el("span", { class: "label" }, item.label));
    if (item.cluster !== null && item.cluster !== undefined) {
      meta.push(el("a", { class: "cluster", href: `/clusters/${item.cluster}` }, `cluster ${item.cluster}`));
    }
    const fig = el(
      "figure",
      { class: "card", "data-id": item.id },
      link,
      el(
        "figcaption",
        {},
        item.rank !== undefined
          ? el("span", { class: "rank-score" },
              el("span", { class: "rank" }, `#${item.rank}`), " ",
              el("span", { class: "score", title: "similarity" }, item.score.toFixed(4)))
          : null,
        item.rank === undefined && item.score !== undefined
          ? el("span", { class: "score", title: "highest similarity in the group" }, item.score.toFixed(4))
          : null,
        el("span", { class: "name", title: item.name }, item.name),
        meta.length ? el("span", { class: "meta" }, ...meta.flatMap((m, i) => (i ? [" · ", m] : [m]))) : null,
        el("span", { class: "links" },
          el("a", { class: "full", href: item.image, target: "_blank", rel: "noopener" }, "full image"),
          " · ",
          el("a", { class: "more", href: more }, "more like this")),
      ),
    );
    fig.item = item;
    fig.moreUrl = more;
    link.addEventListener("click", (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return; // new tab: the link
      e.preventDefault();
      lightbox.open(fig);
    });
    return fig;
  }

  // Previous / next buttons for a page of `limit` entries out of `total`.
  function pager(container, total, offset, limit, go) {
    container.replaceChildren();
    if (total <= limit) return;
    const prev = el("button", { type: "button", class: "prev" }, "← previous");
    const next = el("button", { type: "button", class: "next" }, "next →");
    prev.disabled = offset <= 0;
    next.disabled = offset + limit >= total;
    prev.addEventListener("click", () => go(Math.max(0, offset - limit)));
    next.addEventListener("click", () => go(offset + limit));
    const last = Math.min(total, offset + limit);
    container.append(prev, el("span", { class: "range" },
      `${(offset + 1).toLocaleString()}–${last.toLocaleString()} of ${total.toLocaleString()}`), next);
  }

  function status(text, isError = false) {
    const node = document.getElementById("status");
    node.textContent = text || "";
    node.classList.toggle("error", Boolean(isError));
  }

  // The lightbox: one image large, with its facts; ← → step through the cards of its grid.
  const lightbox = (() => {
    let box = null;
    let current = null;
    let onRemove = null;

    function build() {
      box = el("div", { class: "lightbox", id: "lightbox", role: "dialog", "aria-modal": "true", "aria-label": "image", hidden: true },
        el("button", { type: "button", class: "lb-close", title: "close (Esc)", "aria-label": "close" }, "×"),
        el("button", { type: "button", class: "lb-prev", title: "previous (←)", "aria-label": "previous" }, "‹"),
        el("figure", { class: "lb-figure" },
          el("img", { class: "lb-img", alt: "" }),
          el("figcaption", { class: "lb-caption" })),
        el("button", { type: "button", class: "lb-next", title: "next (→)", "aria-label": "next" }, "›"));
      box.querySelector(".lb-close").addEventListener("click", close);
      box.querySelector(".lb-prev").addEventListener("click", () => step(-1));
      box.querySelector(".lb-next").addEventListener("click", () => step(1));
      box.addEventListener("click", (e) => { if (e.target === box) close(); });
      document.addEventListener("keydown", (e) => {
        if (!box || box.hidden) return;
        if (e.key === "Escape") close();
        else if (e.key === "ArrowLeft") step(-1);
        else if (e.key === "ArrowRight") step(1);
        else return;
        e.preventDefault();
      });
      document.body.append(box);
    }

    function siblings() {
      const grid = current && current.parentElement;
      return grid ? [...grid.querySelectorAll(":scope > .card")] : [];
    }

    function show(fig) {
      current = fig;
      const item = fig.item;
      const img = box.querySelector(".lb-img");
      img.src = item.image;
      img.alt = item.name;
      const facts = [el("strong", { class: "lb-name" }, item.name)];
      if (item.rank !== undefined) facts.push(` · #${item.rank}, similarity ${item.score.toFixed(4)}`);
      if (item.label) facts.push(` · ${item.label}`);
      if (item.cluster !== null && item.cluster !== undefined) {
        facts.push(" · ", el("a", { href: `/clusters/${item.cluster}` }, `cluster ${item.cluster}`));
      }
      const actions = [
        el("a", { class: "lb-more", href: fig.moreUrl }, "more like this"), " · ",
        el("a", { href: item.image, target: "_blank", rel: "noopener" }, "full image"),
      ];
      if (onRemove) {
        const remove = el("button", { type: "button", class: "lb-remove" }, "remove from the collection");
        remove.addEventListener("click", () => onRemove(item, close));
        actions.push(" · ", remove);
      }
      const all = siblings();
      const at = all.indexOf(fig);
      box.querySelector(".lb-prev").disabled = at <= 0;
      box.querySelector(".lb-next").disabled = at < 0 || at >= all.length - 1;
      box.querySelector(".lb-caption").replaceChildren(el("div", {}, ...facts), el("div", { class: "lb-actions" }, ...actions),
        el("div", { class: "lb-count" }, at >= 0 ? `${at + 1} of ${all.length}` : ""));
    }

    function open(fig) {
      if (!box) build();
      box.hidden = false;
      document.body.classList.add("no-scroll");
      show(fig);
      box.querySelector(".lb-close").focus();
    }

    function step(delta) {
      const all = siblings();
      const at = all.indexOf(current);
      const next = all[at + delta];
      if (next) show(next);
    }

    function close() {
      if (!box) return;
      box.hidden = true;
      document.body.classList.remove("no-scroll");
      if (current) {
        const link = current.querySelector(".thumb-link");
        if (link) link.focus();
      }
    }

    return { open, close, setRemove: (fn) => { onRemove = fn; } };
  })();

  // The removal a lightbox offers when the server lets the pages change the collection.
  function enableRemove(after) {
    lightbox.setRemove(async (item, done) => {
      if (!confirm(`Remove ${item.name} from the collection? The file itself stays.`)) return;
      try {
        const job = await api("/api/remove", {
          method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ids: [item.id] }),
        });
        await waitForJob(job.id, () => {});
        done();
        status(`removed ${item.name} from the collection`);
        if (after) after();
      } catch (err) {
        status(err.message, true);
      }
    });
  }

  // Poll a job until it ends; `progress(job)` is called with each state. Resolves to the job.
  async function waitForJob(id, progress) {
    for (;;) {
      const job = await api(`/api/jobs/${id}`);
      progress(job);
      if (job.state === "done") return job;
      if (job.state === "failed") throw new Error(job.message || "the job failed");
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
  }

  // Collection name in the header, the Add link when allowed; resolves to /api/info.
  async function loadInfo() {
    const info = await api("/api/info");
    document.getElementById("coll-name").textContent =
      `${info.name} · ${info.count.toLocaleString()} image${info.count === 1 ? "" : "s"}`;
    const add = document.getElementById("nav-add");
    if (add) add.hidden = !info.can_add;
    if (info.can_add) enableRemove(() => location.reload());
    return info;
  }

  // A message in a grid that has nothing to show.
  function empty(container, text) {
    container.replaceChildren(el("p", { class: "empty" }, text));
  }

  return { api, el, card, pager, status, searchUrl, loadInfo, lightbox, waitForJob, empty };
})();
