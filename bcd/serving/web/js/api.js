// Talking to the bcd server: API key handling, JSON errors, uploads with progress.

const KEY_STORAGE = "bcd.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY_STORAGE, value.trim());
  else sessionStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function withKey(extra) {
  const headers = new Headers(extra || {});
  const key = apiKey();
  if (key) headers.set("X-API-Key", key);
  return headers;
}

function explain(status, code, message) {
  if (status === 401) return `${message} Enter an API key under “Connection”.`;
  if (status === 403) return `${message} Ask an administrator for a valid key.`;
  if (status === 413) return `${message}`;
  if (status === 503) return `${message} The model may still be loading; try again shortly.`;
  return message;
}

async function errorFrom(response) {
  let code = "http_error";
  let message = `The server answered ${response.status} ${response.statusText}.`;
  try {
    const document = await response.json();
    if (document && document.error) {
      code = document.error.code || code;
      message = document.error.message || message;
    }
  } catch (_) {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, code, explain(response.status, code, message));
}

export async function request(method, url, { body, headers, expect = "json" } = {}) {
  let response;
  try {
    response = await fetch(url, { method, body, headers: withKey(headers) });
  } catch (_) {
    throw new ApiError(0, "network", "The server could not be reached. Is `bcd serve` running?");
  }
  if (!response.ok) throw await errorFrom(response);
  if (expect === "json") return response.json();
  if (expect === "blob") return response.blob();
  return response;
}

// Fetch an image or file with the API key and return an object URL for it.
export async function objectUrl(url) {
  const blob = await request("GET", url, { expect: "blob" });
  return URL.createObjectURL(blob);
}

// Upload a FormData with upload progress (fetch cannot report it).
export function upload(url, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    const key = apiKey();
    if (key) xhr.setRequestHeader("X-API-Key", key);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let document = null;
      try {
        document = JSON.parse(xhr.responseText);
      } catch (_) {
        document = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && document) {
        resolve(document);
        return;
      }
      const error = (document && document.error) || {};
      const message = error.message || `The server answered ${xhr.status}.`;
      reject(new ApiError(xhr.status, error.code || "http_error", explain(xhr.status, error.code, message)));
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, "network", "The upload failed: the server could not be reached.")),
    );
    xhr.send(form);
  });
}
