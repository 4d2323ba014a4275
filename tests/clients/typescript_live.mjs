// Drives the built TypeScript client (clients/typescript/dist) against a live server: a streamed Generate,
// UpdateMemory, ForkSession and ReadState, asserting on each; prints a JSON summary that
// tests/clients/test_typescript_live.py checks again through the Python client.
// Usage: node typescript_live.mjs HOST:PORT
import assert from "node:assert/strict";

import {
  Code,
  ConnectError,
  FinishReason,
  MemoryClient,
  WriteMode,
  computeChecksum,
  verifyChecksum,
} from "../../clients/typescript/dist/index.js";

const FACT = "Note to self: the spare key is under the blue flowerpot by the back door.";
const QUESTION = [{ role: "user", content: "Where is the spare key?" }];

const client = new MemoryClient(process.argv[2], { timeoutMs: 120_000 });
try {
  const session = await client.createSession({ metadata: { client: "typescript" } });
  assert.match(session.sessionId, /^[0-9a-f]{32}$/);
  assert.equal(session.memoryVersion, 0n);
  assert.deepEqual(session.metadata, { client: "typescript" });

  const update = await client.updateMemory(session.sessionId, FACT);
  assert.equal(update.memoryVersion, 1n);
  assert.ok(update.tokensWritten > 0n);

  // streamed Generate: deltas arrive one by one and concatenate to the result's text
  const stream = client.generate(session.sessionId, QUESTION, { maxNewTokens: 8 });
  const deltas = [];
  for await (const delta of stream) deltas.push(delta);
  const result = stream.result;
  assert.ok(result, "the stream ended without a result");
  assert.ok(deltas.length >= 1);
  assert.equal(deltas.map((d) => d.text).join(""), result.text);
  assert.equal(result.usage.generatedTokens, deltas.reduce((n, d) => n + d.tokenIds.length, 0));
  assert.ok(result.usage.generatedTokens >= 1 && result.usage.generatedTokens <= 8);
  assert.equal(result.usage.writtenTokens, result.usage.promptTokens + result.usage.generatedTokens);
  assert.equal(result.memoryVersion, 2n);
  assert.ok([FinishReason.END_OF_TURN, FinishReason.LENGTH].includes(result.finishReason));

  const source = await client.readState(session.sessionId);
  assert.equal(source.session.memoryVersion, 2n);
  assert.deepEqual(source.state.shape, [30, 1, 8, 8]);
  assert.equal(source.state.dtype, "float32");
  assert.ok(verifyChecksum(source.state), "the values do not match their checksum");
  assert.ok(source.state.layers.some((layer) => layer.frobeniusNorm > 0), "writes left the memory empty");

  // ForkSession: same memory and version; independent afterwards
  const fork = await client.forkSession(session.sessionId, { branch: "ts" });
  assert.equal(fork.parentSessionId, session.sessionId);
  assert.equal(fork.parentMemoryVersion, 2n);
  assert.equal(fork.memoryVersion, 2n);
  const forked = await client.readState(fork.sessionId);
  assert.equal(forked.state.checksum, source.state.checksum);

  const forkUpdate = await client.updateMemory(fork.sessionId, "Actually the key is with the neighbour.");
  assert.equal(forkUpdate.memoryVersion, 3n);
  const forkAfter = await client.readState(fork.sessionId);
  assert.notEqual(forkAfter.state.checksum, source.state.checksum);
  assert.equal(computeChecksum(forkAfter.state), forkAfter.state.checksum);
  const sourceAfter = await client.readState(session.sessionId, { summaryOnly: true });
  assert.equal(sourceAfter.state.checksum, source.state.checksum);
  assert.equal(sourceAfter.session.memoryVersion, 2n);
  assert.ok(sourceAfter.state.layers.every((layer) => layer.values.length === 0));

  // read-only generation reads the memory and leaves it alone
  const readOnly = await client.generateText(session.sessionId, QUESTION, {
    maxNewTokens: 2,
    writeMode: WriteMode.NONE,
  });
  assert.equal(readOnly.memoryVersion, 2n);
  assert.equal(readOnly.usage.writtenTokens, 0);

  // errors arrive as ConnectError carrying the gRPC status
  await assert.rejects(client.readState("f".repeat(32)), (error) => {
    assert.ok(error instanceof ConnectError);
    assert.equal(error.code, Code.NotFound);
    assert.match(error.message, /does not exist/);
    return true;
  });
  await assert.rejects(client.forkSession("not-an-id"), (error) => error.code === Code.InvalidArgument);

  console.log(
    JSON.stringify({
      session_id: session.sessionId,
      fork_id: fork.sessionId,
      text: result.text,
      deltas: deltas.length,
      source_checksum: source.state.checksum,
      fork_checksum: forkAfter.state.checksum,
      source_version: Number(sourceAfter.session.memoryVersion),
      fork_version: Number(forkAfter.session.memoryVersion),
    }),
  );
} finally {
  client.close();
}
