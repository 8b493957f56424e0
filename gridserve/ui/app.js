// gridserve's page: list files (filter, paging), play or show them, upload resumably (tus).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "gridserve.token";      // kept for the browser tab's session only
  const LISTING_KEY = "gridserve.listing";  // a signed listing URL the user pasted
  const pageSize = Number(new URLSearchParams(location.search).get("limit")) || 100;
  const state = { files: [], prefix: "", next: null, config: null, loading: false, limit: Math.min(Math.max(pageSize, 1), 1000) };

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

  // Listing. One request at a time, answers of an older request dropped (typing in the
  // filter), and "More" appends only the page after the last one shown.
  let generation = 0;
  async function list(append) {
    if (append && (!state.next || state.loading)) return;
    const mine = ++generation;
    state.loading = true;
    $("more").disabled = true;
    try {
      await fetchPage(append, mine);
    } finally {
      if (mine === generation) { state.loading = false; $("more").disabled = false; }
    }
  }

  async function fetchPage(append, mine) {
    const signed = sessionStorage.getItem(LISTING_KEY);
    let url;
    if (signed) {
      url = signed;  // a signed URL is used exactly as signed: it covers its query
    } else {
      const params = new URLSearchParams({ limit: String(state.limit) });
      if (state.prefix) params.set("prefix", state.prefix);
      if (append && state.next) params.set("after", state.next);
      url = `${state.config.prefix}/?${params}`;
    }
    const response = await fetch(url);
    if (mine !== generation) return;
    $("empty").hidden = true;
    if (response.status === 401) {
      // Reads need a credential: ask for one (never a listing signed for whoever loads /).
      $("credential").hidden = false;
      show("You are not allowed to list these files without a signed URL.");
      return;
    }
    if (response.status === 403) {
      if (signed) {
        sessionStorage.removeItem(LISTING_KEY);
        $("credential").hidden = false;
        show("The signed listing URL was refused (expired, or signed for another listing).");
      } else {
        show("You are not allowed to list these files.");
      }
      return;
    }
    if (!response.ok) { show(`Listing failed: ${response.status} ${response.statusText}`); return; }
    show("");
    $("credential").hidden = !signed;
    const { files, next } = await response.json();
    if (mine !== generation) return;
    state.next = signed ? null : next;  // a signed listing is one page: it cannot be extended
    state.files = append ? state.files.concat(files) : files;
    render();
    $("more").hidden = !state.next;
    if (!append && files.length === 0) emptyState();
  }

  function emptyState() {
    $("empty").hidden = false;
    $("empty-title").textContent = state.prefix
      ? `No file name starts with \u201c${state.prefix}\u201d.`
      : "No files yet.";
    $("empty-help").hidden = Boolean(state.prefix);
    for (const code of document.querySelectorAll("#empty code.prefix")) code.textContent = state.config.prefix + "/";
    $("empty-curl").textContent =
      `curl -T clip.webm -H "Authorization: Bearer TOKEN" ${location.origin}${state.config.prefix}/`;
  }

  // Media facts: sorting of the loaded rows (the server lists by name), posters, duration and
  // resolution.
  const ORDERS = {
    "date-desc": (a, b) => b.uploadDate.localeCompare(a.uploadDate),
    "date-asc": (a, b) => a.uploadDate.localeCompare(b.uploadDate),
    "size-desc": (a, b) => b.length - a.length,
    "size-asc": (a, b) => a.length - b.length,
  };

  function render() {
    const order = ORDERS[$("sort").value];
    const files = order ? [...state.files].sort(order) : state.files;
    $("files").tBodies[0].replaceChildren(...files.map(row));
  }

  const duration = (media) => {
    const seconds = media && media.duration;
    if (typeof seconds !== "number") return "";
    const s = Math.round(seconds);
    const parts = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
    const text = parts.map((n) => String(n).padStart(2, "0")).join(":");
    return parts[0] ? text : text.slice(3);
  };
  const resolution = (media) => {
    const video = media && media.video;
    return video && video.width && video.height ? `${video.width}×${video.height}` : "";
  };

  function poster(file) {
    const td = document.createElement("td");
    td.className = "poster";
    const posters = file.posterUrls || {};
    if (posters.small) {
      const img = document.createElement("img");
      img.loading = "lazy";
      img.alt = "";
      img.width = 96;
      img.src = posters.small;
      td.append(img);
    }
    return td;
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
      ["num duration", duration(file.media)],
      ["num resolution", resolution(file.media)],
    ].map(([cls, text]) => { const td = document.createElement("td"); td.className = cls; td.textContent = text; return td; });
    const download = document.createElement("td");
    download.className = "download";
    const link = document.createElement("a");
    link.href = downloadURL(file.url);
    link.download = file.filename.split("/").pop();
    link.textContent = "Download";
    download.append(link);
    const actions = document.createElement("td");
    actions.className = "actions";
    if (state.config.uploads) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Delete";
      remove.addEventListener("click", () => removeFile(file, tr));
      actions.append(remove);
    }
    tr.append(poster(file), name, ...cells, download, actions);
    return tr;
  }

  const namePath = (filename) => filename.split("/").map(encodeURIComponent).join("/");

  async function removeFile(file, tr) {
    if (!confirm(`Delete ${file.filename} (every revision)?`)) return;
    const response = await fetch(`${state.config.prefix}/${namePath(file.filename)}`, {
      method: "DELETE", headers: authHeaders(),
    });
    if (response.ok) {
      const { deleted } = await response.json();
      tr.remove();
      $("upload-status").textContent = `Deleted ${file.filename} (${deleted.length} revision${deleted.length === 1 ? "" : "s"}).`;
      if (!$("files").tBodies[0].rows.length) list(false);
    } else if (response.status === 401 || response.status === 403) {
      show("Delete refused: enter the upload token in the upload form first.");
    } else {
      show(`Delete failed: ${response.status} ${response.statusText}`);
    }
  }

  function withQuery(url, query) { return url + (url.includes("?") ? "&" : "?") + query; }
  // A signed URL covers its whole query: nothing may be added to it (the download attribute
  // asks the browser to save it instead).
  const downloadURL = (url) => (/[?&]sig=/.test(url) ? url : withQuery(url, "download=1"));

  function view(file) {
    $("viewer").hidden = false;
    $("viewer-title").textContent = file.filename;
    $("viewer-download").href = downloadURL(file.url);
    $("viewer-download").download = file.filename.split("/").pop();
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

  // Uploads go through tus (the server's {prefix}/.uploads/ endpoint) with tus-js-client, one
  // file after the other, in PATCHes of CHUNK bytes: each is stored before the next is sent.
  // A dropped connection or a restarting server is retried (RETRY_DELAYS) from the offset the
  // server has; Pause stops sending and Resume goes on from there. An upload cut off by closing
  // or reloading the page resumes when the same file is chosen again for the same name: its
  // address is kept in localStorage under tus-js-client's fingerprint of the file until it
  // finishes.
  const CHUNK = 8 * 1024 * 1024;
  // About 4 minutes of retries: long enough for a server to restart and for the lease a
  // crashed server held on the upload to run out (GridFS: 60 s).
  const RETRY_DELAYS = [0, 1000, 2000, 4000, 8000, 15000, 30000, 30000, 60000, 60000];
  const batch = { current: null, queue: [], done: 0, total: 0, last: null, paused: null };
  const uploadStatus = (text) => { $("upload-status").textContent = text; };
  // paused: null (no upload), false (sending) or true. Upload is disabled while one is sending;
  // a new batch chosen while one is paused leaves that one (choosing its file again resumes it).
  const pausable = (paused) => {
    batch.paused = paused;
    $("upload-pause").hidden = paused === null || paused;
    $("upload-resume").hidden = paused === null || !paused;
    document.querySelector("#upload-form button[type=submit]").disabled = paused === false;
  };
  const uploadEndpoint = () => `${state.config.prefix}/.uploads/`;

  function upload(event) {
    event.preventDefault();
    if (batch.current && batch.paused === false) return;  // one batch at a time
    if (typeof tus === "undefined" || !tus.isSupported) {
      uploadStatus("Upload failed: this browser cannot send files in parts (tus).");
      return;
    }
    const dir = state.prefix && state.prefix.endsWith("/") ? state.prefix : "";
    const files = [...$("upload-files").files];
    batch.queue = files.map((file) => ({ file, name: dir + file.name }));
    batch.total = files.reduce((n, file) => n + file.size, 0);
    batch.done = 0;
    batch.last = null;
    $("upload-link").hidden = true;
    batch.current = null;
    pausable(false);
    const progress = $("upload-progress");
    progress.hidden = false;
    progress.value = 0;
    nextUpload().catch(failed);
  }

  function showProgress(sent) {
    $("upload-progress").value = batch.total ? (100 * (batch.done + sent)) / batch.total : 100;
  }

  async function nextUpload() {
    const item = batch.queue.shift();
    if (!item) { finishBatch(); return; }
    const { file, name } = item;
    const endpoint = uploadEndpoint();
    const upload = new tus.Upload(file, {
      endpoint,
      metadata: { filename: name, filetype: file.type || "application/octet-stream" },
      chunkSize: CHUNK,
      retryDelays: RETRY_DELAYS,
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      // The target name is part of the fingerprint: the same file chosen for another folder is
      // another upload.
      fingerprint: (f) => Promise.resolve(
        ["gridserve", location.origin + endpoint, name, f.type, f.size, f.lastModified].join("|")),
      // The token as it is now, on every request (it may be typed in after a refusal).
      onBeforeRequest: (request) => {
        for (const [header, value] of Object.entries(authHeaders())) request.setHeader(header, value);
      },
      onShouldRetry: (error) => !refused(error),
      onProgress: (sent) => showProgress(sent),
      onSuccess: (payload) => uploaded(item, payload),
      onError: failed,
    });
    batch.current = upload;
    const previous = await upload.findPreviousUploads();
    if (previous.length) {
      previous.sort((a, b) => Date.parse(b.creationTime) - Date.parse(a.creationTime));
      upload.resumeFromPreviousUpload(previous[0]);
      uploadStatus(`Resuming ${name}\u2026`);
    } else {
      uploadStatus(`Uploading ${name}\u2026`);
    }
    pausable(false);
    upload.start();
  }

  function uploaded(item, payload) {
    batch.done += item.file.size;
    batch.last = { name: item.name, url: `${state.config.prefix}/${namePath(item.name)}` };
    // The PATCH that completes the upload names the stored file's URL.
    const last = payload && payload.lastResponse;
    const stored = last && last.getHeader("Content-Location");
    if (stored) batch.last.url = stored;
    batch.current = null;
    nextUpload().catch(failed);
  }

  function finishBatch() {
    batch.current = null;
    pausable(null);
    $("upload-progress").hidden = true;
    uploadStatus("Uploaded.");
    if (batch.last) {
      const link = $("upload-link");
      link.href = batch.last.url;
      link.textContent = batch.last.name;
      link.hidden = false;
    }
    $("upload-files").value = "";  // the token stays for the next upload
    list(false);
  }

  // A 4xx is final (token, size, type, a name that exists: sending again is refused again),
  // except 423 (another request holds the upload) and a PATCH's 409 (the offset moved: HEAD
  // says where). Everything else (no answer, 5xx) is retried.
  function refused(error) {
    const response = error && error.originalResponse;
    const status = response ? response.getStatus() : 0;
    const method = error && error.originalRequest ? error.originalRequest.getMethod() : "";
    if (status === 423 || (status === 409 && method !== "POST")) return false;
    return status >= 400 && status < 500;
  }

  function failed(error) {
    const response = error && error.originalResponse;
    const status = response ? response.getStatus() : 0;
    if (refused(error)) {
      batch.current = null;
      batch.queue = [];
      pausable(null);
      $("upload-progress").hidden = true;
      const reason = (response.getBody() || "").split("\n")[0].slice(0, 200);
      uploadStatus(`Upload refused: ${reason.startsWith(String(status)) ? reason : `${status} ${reason}`}`);
      return;
    }
    // The server stayed unreachable through every retry: Resume tries again from its offset.
    pausable(batch.current ? true : null);
    uploadStatus(batch.current
      ? "Upload paused: the server cannot be reached. Resume goes on from where it stopped."
      : `Upload failed: ${error}`);
  }

  function pauseUpload() {
    if (!batch.current) return;
    batch.current.abort();  // stops sending; the server keeps what it has
    pausable(true);
    uploadStatus("Paused.");
  }

  function resumeUpload() {
    if (!batch.current) return;
    pausable(false);
    uploadStatus("Uploading\u2026");
    batch.current.start();
  }

  async function start() {
    state.config = await config();
    $("upload").hidden = !state.config.uploads;
    $("upload-token").value = sessionStorage.getItem(TOKEN_KEY) || "";
    $("upload-token").addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, $("upload-token").value));
    $("credential-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const pasted = new URL($("credential-url").value, location.origin);
      if (pasted.origin !== location.origin || !pasted.pathname.startsWith(state.config.prefix + "/")) {
        show(`Paste a signed URL of this server's listing (${location.origin}${state.config.prefix}/...).`);
        return;
      }
      sessionStorage.setItem(LISTING_KEY, pasted.pathname + pasted.search);
      list(false);
    });
    $("filter").addEventListener("submit", (e) => { e.preventDefault(); });
    let timer = null;
    $("prefix").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.prefix = $("prefix").value; list(false); }, 200);
    });
    $("more").addEventListener("click", () => list(true));
    $("sort").addEventListener("change", render);
    $("viewer-close").addEventListener("click", () => {
      $("viewer").hidden = true;
      $("viewer-body").replaceChildren();
    });
    $("upload-form").addEventListener("submit", upload);
    $("upload-pause").addEventListener("click", pauseUpload);
    $("upload-resume").addEventListener("click", resumeUpload);
    await list(false);
    document.body.dataset.ready = "true";
  }

  start().catch((error) => show(`The page failed to start: ${error}`));
})();
