"""Python client for deltamem: a typed wrapper over the generated gRPC stubs, sync and asyncio."""

from deltamem.client.aio import AsyncMemoryClient
from deltamem.client.requests import Prompt, WriteMode
from deltamem.client.state import state_values, verify_checksum
from deltamem.client.sync import GenerationStream, MemoryClient, tls_channel, tls_credentials

__all__ = [
    "AsyncMemoryClient",
    "GenerationStream",
    "MemoryClient",
    "Prompt",
    "WriteMode",
    "state_values",
    "tls_channel",
    "tls_credentials",
    "verify_checksum",
]
