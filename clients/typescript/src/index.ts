// The package's public surface: the wrapper, the checksum helpers, every generated message and enum with the
// MemoryService descriptor (for callers that build their own transport or client), and connect's error type,
// whose `code` is the gRPC status (Code.NotFound, Code.InvalidArgument, ...).
export * from "./client.js";
export * from "./state.js";
export * from "./gen/deltamem/v1/memory_service_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";
