"""The model: adapter config and parameters, checkpoint I/O, the memory model on a frozen backbone, loading."""
