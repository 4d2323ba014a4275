"""The model `deltamem train` and `deltamem eval` run on, loaded as the server would load it (same kernel settings,
same cache)."""

from __future__ import annotations

from deltamem.runtime.model.adapter_config import DeltaMemConfig


def load_for(args):
    """(model directory, loaded model): training starts from --init or the reference init; evaluation loads
    --adapter, by default the shipped one for the embedded model."""
    from deltamem.runtime.model.backbone import load_model
    from deltamem.runtime.model.default_model import default_adapter_dir, prepare_default_model
    from deltamem.service.config import configure_kernels, default_cache_dir

    configure_kernels()  # DELTAMEM_KERNELS / DELTAMEM_CPU_GEMM, as the server reads them
    model_dir = args.model or prepare_default_model(default_cache_dir())
    if hasattr(args, "init"):
        init = DeltaMemConfig(beta_bias_init=args.beta_bias_init, num_state_heads=args.num_state_heads)
        return model_dir, load_model(model_dir, args.init, args.device, init_config=init)
    adapter = default_adapter_dir(args.model, args.adapter, args.untrained_adapter)
    return model_dir, load_model(model_dir, adapter, args.device)
