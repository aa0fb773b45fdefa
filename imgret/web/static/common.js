// Shared helpers of the imgret pages: API calls, DOM building (text only, never HTML),
// image cards and pagers. Plain JavaScript, no build step.
"use strict";

const imgret = (() => {
  // GET or POST to the API; resolves to the JSON body, rejects with the server's message.
  async function api(url, options = {}) {
    const resp = await fetch(url, { credentials: "same-origin", ...options });
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      let detail = body && body.detail;
      if (Array.isArray(detail)) {
        // FastAPI's validation errors: [{loc: ["query", "k"], msg: "..."}]
        detail = detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
      }
      throw new Error(`${resp.status}: ${detail || resp.statusText || "request failed"}`);
    }
    return body;
  }

  // el("a", {href: "/"}, "text", child, ...): children are nodes or text; null is skipped.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function searchUrl(id, k, mode) {
    const params = new URLSearchParams({ id: String(id) });
    if (k) params.set("k", String(k));
    if (mode) params.set("mode", mode);
    return `/?${params}`;
  }

  // A thumbnail card: the image links to "more like this"; caption with rank, score, name,
  // label, cluster, and links to the full image and to "more like this".
  function card(item, { k, mode } = {}) {
    const more = searchUrl(item.id, k, mode);
    const img = el("img", { class: "thumb", src: item.thumb, alt: item.name, loading: "lazy" });
    img.addEventListener("load", () => {
      if (img.naturalWidth < 48 && img.naturalHeight < 48) img.classList.add("tiny");
    });
    img.addEventListener("error", () => {
      const fig = img.closest(".card");
      if (fig) fig.classList.add("missing");
      img.parentElement.title = "this image cannot be shown";
    });
    const meta = [];
    if (item.label) meta.push(el("span", { class: "label" }, item.label));
    if (item.cluster !== null && item.cluster !== undefined) {
      meta.push(el("a", { class: "cluster", href: `/clusters/${item.cluster}` }, `cluster ${item.cluster}`));
    }
    return el(
      "figure",
      { class: "card", "data-id": item.id },
      el("a", { class: "thumb-link", href: more, title: "more like this" }, img),
      el(
        "figcaption",
        {},
        item.rank !== undefined
          ? el("span", { class: "rank-score" },
              el("span", { class: "rank" }, `#${item.rank}`), " ",
              el("span", { class: "score", title: "similarity" }, item.score.toFixed(4)))
          : null,
        el("span", { class: "name", title: item.name }, item.name),
        meta.length ? el("span", { class: "meta" }, ...meta.flatMap((m, i) => (i ? [" · ", m] : [m]))) : null,
        el("span", { class: "links" },
          el("a", { class: "full", href: item.image, target: "_blank", rel: "noopener" }, "full image"),
          " · ",
          el("a", { class: "more", href: more }, "more like this")),
      ),
    );
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

  // Collection name in the header; resolves to /api/info.
  async function loadInfo() {
    const info = await api("/api/info");
    document.getElementById("coll-name").textContent =
      `${info.name} · ${info.count.toLocaleString()} images`;
    return info;
  }

  return { api, el, card, pager, status, searchUrl, loadInfo };
})();
