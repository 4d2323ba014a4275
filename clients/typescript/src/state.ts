// The memory as data: the checksum rule of the API (SHA-256 of the whole state as little-endian float32,
// row-major), recomputed on the client so that a caller can trust values it received or is about to import.
import { createHash } from "node:crypto";

import type { MemoryState } from "./gen/deltamem/v1/memory_service_pb.js";

/** All values of the state, layer after layer, as float32 (what the server holds). */
export function stateValues(state: MemoryState): Float32Array {
  const total = state.layers.reduce((sum, layer) => sum + layer.values.length, 0);
  const values = new Float32Array(total);
  let offset = 0;
  for (const layer of state.layers) {
    values.set(layer.values, offset);
    offset += layer.values.length;
  }
  return values;
}

/** The SHA-256 (hex) of the values as little-endian float32 bytes. */
export function computeChecksum(state: MemoryState): string {
  const values = stateValues(state);
  const bytes = new DataView(new ArrayBuffer(values.length * 4));
  values.forEach((value, i) => bytes.setFloat32(i * 4, value, true));
  return createHash("sha256").update(new Uint8Array(bytes.buffer)).digest("hex");
}

/** Whether a full (not summary_only) state's values match its checksum. */
export function verifyChecksum(state: MemoryState): boolean {
  const expected = state.shape.reduce((product, n) => product * n, 1);
  return stateValues(state).length === expected && computeChecksum(state) === state.checksum;
}
