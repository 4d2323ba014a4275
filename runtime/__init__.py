"""The δ-mem runtime: adapter, backbone patching, the embedded engine and sessions."""
