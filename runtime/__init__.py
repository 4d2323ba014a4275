"""The δ-mem runtime by concern: the model (model/), the engine (engine/), the sessions (sessions/), the SGLang
backend (sglang_backend/); errors and tracing serve all of them."""
