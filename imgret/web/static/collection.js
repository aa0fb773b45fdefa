// The collection page: facts, every cluster as a strip of its most central images, plots.
"use strict";

(() => {
  const { api, el, card, pager, status, loadInfo } = imgret;
  const $ = (id) => document.getElementById(id);
  const CLUSTER_LIMIT = 60;
  const PLOT_TITLES = {
    elbow: "Elbow: KMeans inertia and silhouette against K",
    clusters: "Sample images of each cluster",
    loss: "Autoencoder: training and validation loss",
    reconstructions: "Autoencoder: validation images over their reconstructions",
  };

  function facts(info) {
    const m = info.model;
    const rows = [
      ["images", info.count.toLocaleString()],
      ["model", `${m.name} (${m.embedding_dim}-d embedding, ${m.image_size} px, ${m.channels} channel${m.channels === 1 ? "" : "s"})`],
      ["model file", m.ref],
      ["index", info.index],
      ["metric", info.metric],
      ["source", info.source],
      ["skipped files", String(info.skipped)],
      ["clusters", info.clustered ? `K = ${info.k}${info.elbow_k ? " (elbow)" : " (given)"}` : "not clustered"],
    ];
    $("facts").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  async function clusters(offset) {
    try {
      const page = await api(`/api/clusters?offset=${offset}&limit=${CLUSTER_LIMIT}`);
      $("clusters").replaceChildren(...page.clusters.map((c) => el(
        "section", { class: "strip", "data-cluster": c.cluster },
        el("h3", {}, el("a", { href: `/clusters/${c.cluster}` }, `Cluster ${c.cluster}`),
          el("span", { class: "size" }, ` · ${c.size.toLocaleString()} image${c.size === 1 ? "" : "s"}`)),
        el("div", { class: "strip-images" }, ...c.samples.map((item) => card(item))),
      )));
      pager($("clusters-pager"), page.total, page.offset, CLUSTER_LIMIT, clusters);
    } catch (err) {
      status(err.message, true);
    }
  }

  async function start() {
    let info;
    try {
      info = await loadInfo();
    } catch (err) {
      status(err.message, true);
      return;
    }
    facts(info);
    $("no-images").hidden = info.count > 0;
    if (info.clustered && info.count > 0) {
      $("clusters-section").hidden = false;
      $("clusters-title").textContent = `Clusters (K = ${info.k})`;
      clusters(0);
    }
    const plots = Object.entries(info.plots);
    if (plots.length) {
      $("plots-section").hidden = false;
      $("plots").replaceChildren(...plots.map(([name, url]) => el(
        "figure", { class: "plot", id: `plot-${name}` },
        el("a", { href: url, target: "_blank", rel: "noopener" },
          el("img", { src: url, alt: PLOT_TITLES[name] || name, loading: "lazy" })),
        el("figcaption", {}, PLOT_TITLES[name] || name),
      )));
    }
  }

  start();
})();
