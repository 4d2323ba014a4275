"""The asyncio client: the same calls as MemoryClient, awaitable."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import grpc

from deltamem.client.requests import Prompt, auth_metadata, call_metadata, generate_request, to_input
from deltamem.client.sync import DEFAULT_TARGET
from deltamem.v1 import memory_service_pb2 as pb
from deltamem.v1 import memory_service_pb2_grpc as pb_grpc


class AsyncGenerationStream:
    """`async for` the streamed TokenDeltas; `result` holds the GenerateResult once the stream ended."""

    def __init__(self, call):
        self._call = call
        self.result: pb.GenerateResult | None = None

    async def __aiter__(self) -> AsyncIterator[pb.TokenDelta]:
        async for response in self._call:
            if response.HasField("delta"):
                yield response.delta
            else:
                self.result = response.result

    def cancel(self) -> None:
        self._call.cancel()

    async def finish(self) -> pb.GenerateResult:
        async for _ in self:
            pass
        assert self.result is not None, "the server ended the stream without a result"
        return self.result


class AsyncMemoryClient:
    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        channel: grpc.aio.Channel | None = None,
        timeout: float | None = None,
        api_key: str | None = None,
    ):
        self._channel = channel or grpc.aio.insecure_channel(target)
        self._auth = auth_metadata(api_key)
        self._stub = pb_grpc.MemoryServiceStub(self._channel)
        self.timeout = timeout

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """Per call: the API key and, when the caller traces, its trace context."""
        return call_metadata(self._auth)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def create_session(self, metadata: Mapping[str, str] | None = None) -> pb.Session:
        response = await self._stub.CreateSession(
            pb.CreateSessionRequest(metadata=metadata or {}), timeout=self.timeout, metadata=self._metadata
        )
        return response.session

    def generate(self, session_id: str, prompt: Prompt, **options) -> AsyncGenerationStream:
        timeout = options.pop("timeout", self.timeout)
        return AsyncGenerationStream(
            self._stub.Generate(
                generate_request(session_id, prompt, **options), timeout=timeout, metadata=self._metadata
            )
        )

    async def generate_text(self, session_id: str, prompt: Prompt, **options) -> pb.GenerateResult:
        return await self.generate(session_id, prompt, **options).finish()

    async def update_memory(self, session_id: str, prompt: Prompt) -> pb.UpdateMemoryResponse:
        request = pb.UpdateMemoryRequest(session_id=session_id, input=to_input(prompt))
        return await self._stub.UpdateMemory(request, timeout=self.timeout, metadata=self._metadata)

    async def read_state(self, session_id: str, summary_only: bool = False) -> pb.ReadStateResponse:
        request = pb.ReadStateRequest(session_id=session_id, summary_only=summary_only)
        return await self._stub.ReadState(request, timeout=self.timeout, metadata=self._metadata)

    async def fork_session(self, session_id: str, metadata: Mapping[str, str] | None = None) -> pb.Session:
        request = pb.ForkSessionRequest(session_id=session_id, metadata=metadata or {})
        return (await self._stub.ForkSession(request, timeout=self.timeout, metadata=self._metadata)).session

    async def import_state(
        self, state: pb.MemoryState, session_id: str = "", metadata: Mapping[str, str] | None = None
    ) -> pb.Session:
        """Load a memory exported by read_state into `session_id` (a new session if empty)."""
        request = pb.ImportStateRequest(session_id=session_id, state=state, metadata=metadata or {})
        return (await self._stub.ImportState(request, timeout=self.timeout, metadata=self._metadata)).session

    async def delete_session(self, session_id: str) -> None:
        await self._stub.DeleteSession(
            pb.DeleteSessionRequest(session_id=session_id), timeout=self.timeout, metadata=self._metadata
        )

    async def list_sessions(self, page_size: int = 0) -> AsyncIterator[pb.Session]:
        token = ""
        while True:
            request = pb.ListSessionsRequest(page_size=page_size, page_token=token)
            page = await self._stub.ListSessions(request, timeout=self.timeout, metadata=self._metadata)
            for session in page.sessions:
                yield session
            token = page.next_page_token
            if not token:
                return
