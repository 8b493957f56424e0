// gridserve's page: list files (filter, paging), play or show them, upload with progress.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { prefix: "", next: null, config: null };

  const size = (n) => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  };
  const kind = (type) => (type || "").split("/")[0];
  const show = (text) => { const m = $("message"); m.textContent = text; m.hidden = !text; };

  async function config() {
    const response = await fetch("/_ui/config.json");
    return response.json();
  }

  async function list(append) {
    const params = new URLSearchParams({ limit: "100" });
    if (state.prefix) params.set("prefix", state.prefix);
    if (append && state.next) params.set("after", state.next);
    const response = await fetch(`${state.config.prefix}/?${params}`, { headers: authHeaders() });
    if (response.status === 401 || response.status === 403) {
      show("You are not allowed to list these files.");
      return;
    }
    if (!response.ok) { show(`Listing failed: ${response.status} ${response.statusText}`); return; }
    show("");
    const { files, next } = await response.json();
    state.next = next;
    const body = $("files").tBodies[0];
    if (!append) body.replaceChildren();
    for (const file of files) body.append(row(file));
    $("more").hidden = !next;
    if (!append && files.length === 0) show(state.prefix ? "No file starts with that prefix." : "No files yet.");
  }

  function row(file) {
    const tr = document.createElement("tr");
    tr.dataset.filename = file.filename;
    const name = document.createElement("td");
    name.className = "name";
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = file.filename;
    open.addEventListener("click", () => view(file));
    name.append(open);
    const cells = [
      ["type", file.contentType || ""],
      ["num", size(file.length)],
      ["date", new Date(file.uploadDate).toLocaleString()],
    ].map(([cls, text]) => { const td = document.createElement("td"); td.className = cls; td.textContent = text; return td; });
    const download = document.createElement("td");
    const link = document.createElement("a");
    link.href = withQuery(file.url, "download=1");
    link.textContent = "Download";
    download.append(link);
    tr.append(name, ...cells, download);
    return tr;
  }

  function withQuery(url, query) { return url + (url.includes("?") ? "&" : "?") + query; }

  function view(file) {
    $("viewer").hidden = false;
    $("viewer-title").textContent = file.filename;
    $("viewer-download").href = withQuery(file.url, "download=1");
    const body = $("viewer-body");
    body.replaceChildren();
    const type = kind(file.contentType);
    let element;
    if (type === "video" || type === "audio") {
      element = document.createElement(type);
      element.controls = true;
      element.preload = "metadata";
      element.src = file.url;
      element.id = "player";
    } else if (type === "image" && file.contentType !== "image/svg+xml") {
      element = document.createElement("img");
      element.alt = file.filename;
      element.src = file.url;
    } else {
      element = document.createElement("p");
      element.textContent = "No preview for this type; use the download link.";
    }
    body.append(element);
    $("viewer").scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  function authHeaders() {
    const token = $("upload-token").value;
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function upload(event) {
    event.preventDefault();
    const form = new FormData();
    for (const file of $("upload-files").files) form.append("file", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", `${state.config.prefix}/${state.prefix && state.prefix.endsWith("/") ? state.prefix : ""}`);
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    const progress = $("upload-progress");
    progress.hidden = false;
    progress.value = 0;
    request.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) progress.value = (100 * e.loaded) / e.total;
    });
    request.addEventListener("load", () => {
      progress.hidden = true;
      if (request.status === 201) {
        $("upload-status").textContent = "Uploaded.";
        $("upload-form").reset();
        list(false);
      } else {
        $("upload-status").textContent = `Upload refused: ${request.status} ${request.statusText}`;
      }
    });
    request.addEventListener("error", () => {
      progress.hidden = true;
      $("upload-status").textContent = "Upload failed: the connection was lost.";
    });
    request.send(form);
  }

  async function start() {
    state.config = await config();
    $("upload").hidden = !state.config.uploads;
    $("filter").addEventListener("submit", (e) => { e.preventDefault(); });
    let timer = null;
    $("prefix").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.prefix = $("prefix").value; list(false); }, 200);
    });
    $("more").addEventListener("click", () => list(true));
    $("viewer-close").addEventListener("click", () => {
      $("viewer").hidden = true;
      $("viewer-body").replaceChildren();
    });
    $("upload-form").addEventListener("submit", upload);
    await list(false);
    document.body.dataset.ready = "true";
  }

  start().catch((error) => show(`The page failed to start: ${error}`));
})();
