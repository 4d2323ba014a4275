"""The engine: request types, input encoding, the sequential twin and the continuous-batching engine (job,
scheduler, state pool, runner), KV storage, sampling and detokenisation."""
