/** One request to an OpenAI-compatible chat-completions endpoint (`<base>/chat/completions`), greedy. */
export interface ChatCompletionRequest {
  /** the base URL, e.g. http://localhost:8000/v1 */
  endpoint: string;
  model?: string;
  apiKey?: string;
  messages: { role: string; content: string }[];
  signal?: AbortSignal;
  /** default 120 s */
  timeoutMs?: number;
}

/** The reply's text; throws (a plain Error naming the HTTP status or what is missing) when there is none. */
export async function chatCompletion(r: ChatCompletionRequest): Promise<string> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), r.timeoutMs ?? 120_000);
  const onAbort = () => ctl.abort();
  r.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const res = await fetch(`${r.endpoint.replace(/\/+$/, '')}/chat/completions`, {
      method: 'POST', signal: ctl.signal,
      headers: { 'content-type': 'application/json', ...(r.apiKey ? { authorization: `Bearer ${r.apiKey}` } : {}) },
      body: JSON.stringify({ model: r.model ?? 'gpt-4', messages: r.messages, temperature: 0 }),
    });
    const body = await res.text();
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${body.slice(0, 200)}`);
    const content = (JSON.parse(body) as { choices?: { message?: { content?: string } }[] }).choices?.[0]?.message?.content;
    if (typeof content !== 'string') throw new Error('the response has no choices[0].message.content');
    return content;
  } finally {
    clearTimeout(timer);
    r.signal?.removeEventListener('abort', onAbort);
  }
}
