// A small HTTP/JSON service in front of deltamem, through the TypeScript client (clients/typescript): another
// team's backend that gives each of its users a memory without speaking gRPC itself.
//
//   POST /sessions                                   -> {session_id}
//   POST /remember  {session_id, text}               -> {tokens_written, memory_version}
//   POST /ask       {session_id, question, max_new_tokens?} -> {answer, memory_version, finish_reason, deltas}
//   GET  /sessions/ID                                -> {memory_version, tokens_written, checksum}
//
// Environment: DELTAMEM_TARGET (host:port of the server, default 127.0.0.1:50051), HOST (default 127.0.0.1),
// PORT (default 8080; 0 picks a free one). Prints "listening on http://HOST:PORT" once it accepts requests.
import { createServer } from "node:http";

import { Code, ConnectError, FinishReason, MemoryClient } from "../../clients/typescript/dist/index.js";

const target = process.env.DELTAMEM_TARGET || "127.0.0.1:50051";
const client = new MemoryClient(target, { timeoutMs: 300_000 });

// gRPC status -> HTTP status, for the errors a caller can act on
const HTTP_STATUS = new Map([
  [Code.InvalidArgument, 400],
  [Code.Unauthenticated, 401],
  [Code.NotFound, 404],
  [Code.FailedPrecondition, 409],
  [Code.ResourceExhausted, 429],
  [Code.Unavailable, 503],
]);

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function readJson(request) {
  let body = "";
  for await (const chunk of request) body += chunk;
  try {
    return body ? JSON.parse(body) : {};
  } catch {
    throw new HttpError(400, "the body is not JSON");
  }
}

function field(body, name, type) {
  if (typeof body[name] !== type) throw new HttpError(400, `"${name}" (${type}) is required`);
  return body[name];
}

const routes = {
  "POST /sessions": async () => {
    const session = await client.createSession({ metadata: { via: "node-service" } });
    return { session_id: session.sessionId };
  },
  "POST /remember": async (body) => {
    const written = await client.updateMemory(field(body, "session_id", "string"), field(body, "text", "string"));
    return { tokens_written: Number(written.tokensWritten), memory_version: Number(written.memoryVersion) };
  },
  "POST /ask": async (body) => {
    const question = field(body, "question", "string");
    const stream = client.generate(field(body, "session_id", "string"), [{ role: "user", content: question }], {
      maxNewTokens: body.max_new_tokens ?? 32,
    });
    let answer = "";
    let deltas = 0;
    for await (const delta of stream) {
      answer += delta.text;
      deltas += 1;
    }
    return {
      answer,
      deltas,
      memory_version: Number(stream.result.memoryVersion),
      finish_reason: FinishReason[stream.result.finishReason],
    };
  },
};

async function route(request) {
  const url = new URL(request.url, "http://service");
  const session = url.pathname.match(/^\/sessions\/([^/]+)$/);
  if (request.method === "GET" && session) {
    const read = await client.readState(session[1], { summaryOnly: true });
    return {
      memory_version: Number(read.session.memoryVersion),
      tokens_written: Number(read.session.tokensWritten),
      checksum: read.state.checksum,
    };
  }
  const handler = routes[`${request.method} ${url.pathname}`];
  if (!handler) throw new HttpError(404, `no route ${request.method} ${url.pathname}`);
  return handler(await readJson(request));
}

const server = createServer(async (request, response) => {
  let status = 200;
  let payload;
  try {
    payload = await route(request);
  } catch (error) {
    if (error instanceof HttpError) status = error.status;
    else if (error instanceof ConnectError) status = HTTP_STATUS.get(error.code) ?? 502;
    else status = 500;
    payload = { error: error instanceof ConnectError ? error.rawMessage : String(error.message ?? error) };
    if (status >= 500) console.error(error);
  }
  response.writeHead(status, { "content-type": "application/json" });
  response.end(JSON.stringify(payload));
});

function shutdown() {
  server.close(() => client.close());
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

const host = process.env.HOST || "127.0.0.1";
server.listen(Number(process.env.PORT ?? 8080), host, () => {
  console.log(`listening on http://${host}:${server.address().port} (deltamem at ${target})`);
});
