// A thin typed wrapper over the generated MemoryService client: plain-object prompts and options in,
// generated messages out, one gRPC (HTTP/2) connection per MemoryClient. Everything it sends is built here so
// that callers never assemble oneofs by hand.
import { create } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import {
  InputSchema,
  MemoryService,
  WriteMode,
  type ContextPolicy,
  type GenerateResponse,
  type GenerateResult,
  type Input,
  type MemoryState,
  type ReadStateResponse,
  type Session,
  type TokenDelta,
  type UpdateMemoryResponse,
} from "./gen/deltamem/v1/memory_service_pb.js";

/** One chat turn; `role` is "system", "user" or "assistant". */
export interface ChatTurn {
  role: string;
  content: string;
}

/** A string is raw text, an array of turns is a chat (chat template applied), an array of numbers is token ids. */
export type Prompt = string | readonly ChatTurn[] | readonly number[];

export interface ClientOptions {
  /** Sent with every call as `authorization: Bearer KEY` (servers with tenants need one). */
  apiKey?: string;
  /** Default deadline of every call, in milliseconds; unset means none. */
  timeoutMs?: number;
}

export interface CreateSessionOptions {
  metadata?: Record<string, string>;
  contextPolicy?: ContextPolicy;
  /** For CONTEXT_POLICY_WINDOW only: how many of the newest tokens to keep as context. */
  windowTokens?: number;
}

export interface GenerateOptions {
  /** In [1, 4096]; 0 or unset means the server's default (256). */
  maxNewTokens?: number;
  /** 0 or unset is greedy decoding. */
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: bigint | number;
  stop?: string[];
  writeMode?: WriteMode;
  ignoreEndOfTurn?: boolean;
  timeoutMs?: number;
  /** Aborting it cancels the generation; the memory then stays at its previous version. */
  signal?: AbortSignal;
}

/** Turns a Prompt into the proto Input oneof. */
export function toInput(prompt: Prompt): Input {
  if (typeof prompt === "string") {
    return create(InputSchema, { kind: { case: "text", value: prompt } });
  }
  if (prompt.length > 0 && prompt.every((item) => typeof item === "number")) {
    return create(InputSchema, { kind: { case: "tokenIds", value: { ids: [...(prompt as readonly number[])] } } });
  }
  const messages = (prompt as readonly ChatTurn[]).map((turn) => {
    if (typeof turn !== "object" || turn === null || typeof turn.role !== "string") {
      throw new TypeError(`a prompt is a string, chat turns or token ids; got ${JSON.stringify(turn)}`);
    }
    return { role: turn.role, content: turn.content };
  });
  return create(InputSchema, { kind: { case: "messages", value: { messages } } });
}

/**
 * A streamed generation: iterate it (once) for the TokenDeltas; `result` holds the GenerateResult once the
 * stream has ended, and `finish()` consumes what is left and returns it.
 */
export class GenerationStream implements AsyncIterable<TokenDelta> {
  result: GenerateResult | undefined;
  private consumed = false;

  constructor(
    private readonly responses: AsyncIterable<GenerateResponse>,
    private readonly controller: AbortController,
  ) {}

  async *[Symbol.asyncIterator](): AsyncIterator<TokenDelta> {
    if (this.consumed) throw new Error("a GenerationStream can be iterated only once");
    this.consumed = true;
    for await (const response of this.responses) {
      if (response.event.case === "delta") yield response.event.value;
      else if (response.event.case === "result") this.result = response.event.value;
    }
  }

  /** Stops the generation; the session's memory stays at its previous version. */
  cancel(): void {
    this.controller.abort();
  }

  async finish(): Promise<GenerateResult> {
    if (!this.consumed) {
      for await (const _ of this) void _;
    }
    if (this.result === undefined) throw new Error("the server ended the stream without a result");
    return this.result;
  }
}

export class MemoryClient {
  /** The generated client, for anything the wrapper does not cover. */
  readonly raw: Client<typeof MemoryService>;
  private readonly sessions: Http2SessionManager;
  private readonly timeoutMs: number | undefined;

  /** `target` is "host:port" (plaintext) or a full "http://" / "https://" URL. */
  constructor(target: string, options: ClientOptions = {}) {
    const baseUrl = /^https?:\/\//.test(target) ? target : `http://${target}`;
    this.sessions = new Http2SessionManager(baseUrl);
    const interceptors: Interceptor[] = [];
    if (options.apiKey) {
      const header = `Bearer ${options.apiKey}`;
      interceptors.push((next) => (request) => {
        request.header.set("authorization", header);
        return next(request);
      });
    }
    const transport: Transport = createGrpcTransport({ baseUrl, sessionManager: this.sessions, interceptors });
    this.raw = createClient(MemoryService, transport);
    this.timeoutMs = options.timeoutMs;
  }

  /** Closes the connection; calls in flight fail. */
  close(): void {
    this.sessions.abort();
  }

  async createSession(options: CreateSessionOptions = {}): Promise<Session> {
    const response = await this.raw.createSession(
      { metadata: options.metadata ?? {}, contextPolicy: options.contextPolicy, windowTokens: options.windowTokens },
      { timeoutMs: this.timeoutMs },
    );
    return required(response.session, "CreateSession");
  }

  /** Starts a streamed generation that reads (and, per writeMode, writes) the session's memory. */
  generate(sessionId: string, prompt: Prompt, options: GenerateOptions = {}): GenerationStream {
    const controller = new AbortController();
    options.signal?.addEventListener("abort", () => controller.abort(), { once: true });
    const responses = this.raw.generate(
      {
        sessionId,
        input: toInput(prompt),
        sampling: {
          temperature: options.temperature ?? 0,
          topP: options.topP ?? 0,
          topK: options.topK ?? 0,
          seed: options.seed === undefined ? undefined : BigInt(options.seed),
        },
        maxNewTokens: options.maxNewTokens ?? 0,
        stop: options.stop ?? [],
        writeMode: options.writeMode ?? WriteMode.INPUT_AND_OUTPUT,
        ignoreEndOfTurn: options.ignoreEndOfTurn ?? false,
      },
      { timeoutMs: options.timeoutMs ?? this.timeoutMs, signal: controller.signal },
    );
    return new GenerationStream(responses, controller);
  }

  generateText(sessionId: string, prompt: Prompt, options: GenerateOptions = {}): Promise<GenerateResult> {
    return this.generate(sessionId, prompt, options).finish();
  }

  updateMemory(sessionId: string, prompt: Prompt): Promise<UpdateMemoryResponse> {
    return this.raw.updateMemory({ sessionId, input: toInput(prompt) }, { timeoutMs: this.timeoutMs });
  }

  readState(sessionId: string, options: { summaryOnly?: boolean } = {}): Promise<ReadStateResponse> {
    return this.raw.readState({ sessionId, summaryOnly: options.summaryOnly ?? false }, { timeoutMs: this.timeoutMs });
  }

  async forkSession(sessionId: string, metadata: Record<string, string> = {}): Promise<Session> {
    const response = await this.raw.forkSession({ sessionId, metadata }, { timeoutMs: this.timeoutMs });
    return required(response.session, "ForkSession");
  }

  async deleteSession(sessionId: string): Promise<void> {
    await this.raw.deleteSession({ sessionId }, { timeoutMs: this.timeoutMs });
  }

  /** Every session of the caller, oldest first, following pages. */
  async *listSessions(pageSize = 0): AsyncGenerator<Session> {
    let pageToken = "";
    do {
      const page = await this.raw.listSessions({ pageSize, pageToken }, { timeoutMs: this.timeoutMs });
      yield* page.sessions;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Loads a memory exported by readState into `sessionId` (a new session if empty). */
  async importState(state: MemoryState, sessionId = "", metadata: Record<string, string> = {}): Promise<Session> {
    const response = await this.raw.importState({ sessionId, state, metadata }, { timeoutMs: this.timeoutMs });
    return required(response.session, "ImportState");
  }
}

function required<T>(value: T | undefined, rpc: string): T {
  if (value === undefined) throw new Error(`${rpc} returned no session`);
  return value;
}
