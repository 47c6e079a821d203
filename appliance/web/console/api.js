// The appliance's public API as the console uses it: JSON calls with the signed-in key,
// OpenAI-shaped errors as ApiError, and streamed chat completions.
import { sseData } from './sse.js';

export class ApiError extends Error {
  constructor(status, error = {}, retryAfter = null) {
    super(error.message || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.type = error.type || null;
    this.code = error.code || null;
    this.param = error.param || null;
    this.guard = error.guard || null;
    this.category = error.category || null;
    this.retryAfter = retryAfter;
  }

  static async from(response) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      body = {};
    }
    const retry = response.headers.get('Retry-After');
    return new ApiError(response.status, body.error || {}, retry ? Number(retry) : null);
  }
}

export class Api {
  constructor(key = '') {
    this.key = key;
  }

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    return headers;
  }

  async request(method, path, { body, headers = {}, signal } = {}) {
    const init = { method, headers: this.headers(headers), signal, cache: 'no-store' };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    const response = await fetch(path, init);
    if (!response.ok) throw await ApiError.from(response);
    return response;
  }

  async json(method, path, options) {
    return (await this.request(method, path, options)).json();
  }

  get(path) { return this.json('GET', path); }

  async text(path) {
    return (await this.request('GET', path)).text();
  }

  // A streamed chat completion: calls onChunk(parsedChunk) per event; resolves at [DONE].
  async streamChat(body, { sessionId, signal, onChunk }) {
    const headers = sessionId ? { 'X-Session-Id': sessionId } : {};
    const response = await this.request('POST', '/v1/chat/completions', {
      body: { ...body, stream: true, stream_options: { include_usage: true } }, headers, signal,
    });
    for await (const data of sseData(response)) {
      if (data === '[DONE]') return;
      onChunk(JSON.parse(data));
    }
  }
}
