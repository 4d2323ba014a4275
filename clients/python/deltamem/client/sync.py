"""The blocking client."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import grpc

from deltamem.client.requests import Prompt, auth_metadata, call_metadata, generate_request, to_input
from deltamem.v1 import memory_service_pb2 as pb
from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:50051"


class GenerationStream:
    """Iterate for the streamed TokenDeltas; `result` holds the GenerateResult once the stream ended."""

    def __init__(self, call):
        self._call = call
        self.result: pb.GenerateResult | None = None

    def __iter__(self) -> Iterator[pb.TokenDelta]:
        for response in self._call:
            if response.HasField("delta"):
                yield response.delta
            else:
                self.result = response.result

    def cancel(self) -> None:
        """Stop the generation; the session's memory stays at its previous version."""
        self._call.cancel()

    def finish(self) -> pb.GenerateResult:
        """Consume the rest of the stream and return the result."""
        for _ in self:
            pass
        assert self.result is not None, "the server ended the stream without a result"
        return self.result


def tls_channel(
    target: str, ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.Channel:
    """A TLS channel: `ca_file` verifies the server (None: the system roots); `cert_file` and `key_file` are the
    client's own certificate for servers that require mutual TLS."""
    return grpc.secure_channel(target, tls_credentials(ca_file, cert_file, key_file))


def tls_credentials(ca_file=None, cert_file=None, key_file=None) -> grpc.ChannelCredentials:
    def read(path):
        return open(path, "rb").read() if path else None  # noqa: SIM115 - tiny files, read once

    return grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))


class MemoryClient:
    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        channel: grpc.Channel | None = None,
        timeout: float | None = None,
        api_key: str | None = None,
    ):
        """`api_key` goes with every call as `authorization: Bearer KEY` (servers with tenants need one)."""
        self._auth = auth_metadata(api_key)
        self._channel = channel or grpc.insecure_channel(target)
        self._stub = pb_grpc.MemoryServiceStub(self._channel)
        self.timeout = timeout

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """Per call: the API key and, when the caller traces, its trace context."""
        return call_metadata(self._auth)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    def create_session(self, metadata: Mapping[str, str] | None = None) -> pb.Session:
        return self._stub.CreateSession(
            pb.CreateSessionRequest(metadata=metadata or {}), timeout=self.timeout, metadata=self._metadata
        ).session

    def generate(self, session_id: str, prompt: Prompt, **options) -> GenerationStream:
        """Start a streamed generation; options as in requests.generate_request (max_new_tokens, temperature,
        top_p, top_k, seed, stop, write_mode, ignore_end_of_turn) plus `timeout`."""
        timeout = options.pop("timeout", self.timeout)
        return GenerationStream(
            self._stub.Generate(
                generate_request(session_id, prompt, **options), timeout=timeout, metadata=self._metadata
            )
        )

    def generate_text(self, session_id: str, prompt: Prompt, **options) -> pb.GenerateResult:
        return self.generate(session_id, prompt, **options).finish()

    def update_memory(self, session_id: str, prompt: Prompt) -> pb.UpdateMemoryResponse:
        request = pb.UpdateMemoryRequest(session_id=session_id, input=to_input(prompt))
        return self._stub.UpdateMemory(request, timeout=self.timeout, metadata=self._metadata)

    def read_state(self, session_id: str, summary_only: bool = False) -> pb.ReadStateResponse:
        request = pb.ReadStateRequest(session_id=session_id, summary_only=summary_only)
        return self._stub.ReadState(request, timeout=self.timeout, metadata=self._metadata)

    def fork_session(self, session_id: str, metadata: Mapping[str, str] | None = None) -> pb.Session:
        request = pb.ForkSessionRequest(session_id=session_id, metadata=metadata or {})
        return self._stub.ForkSession(request, timeout=self.timeout, metadata=self._metadata).session

    def import_state(
        self, state: pb.MemoryState, session_id: str = "", metadata: Mapping[str, str] | None = None
    ) -> pb.Session:
        """Load a memory exported by read_state into `session_id` (a new session if empty)."""
        request = pb.ImportStateRequest(session_id=session_id, state=state, metadata=metadata or {})
        return (self._stub.ImportState(request, timeout=self.timeout, metadata=self._metadata)).session

    def delete_session(self, session_id: str) -> None:
        self._stub.DeleteSession(
            pb.DeleteSessionRequest(session_id=session_id), timeout=self.timeout, metadata=self._metadata
        )

    def list_sessions(self, page_size: int = 0) -> Iterator[pb.Session]:
        """Every session, following pages."""
        token = ""
        while True:
            page = self._stub.ListSessions(
                pb.ListSessionsRequest(page_size=page_size, page_token=token),
                timeout=self.timeout,
                metadata=self._metadata,
            )
            yield from page.sessions
            token = page.next_page_token
            if not token:
                return
